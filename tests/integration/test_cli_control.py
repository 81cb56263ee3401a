"""The operator's control-plane commands, as processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.db.models import Channel, WebhookEndpoint
from stream_sync.node import open_store
from stream_sync.outputs import targets
from stream_sync.outputs.plan import load_outputs
from stream_sync.settings import Settings
from stream_sync.webhooks import endpoints
from tests.databases import fresh_postgres_database

CLI = [sys.executable, "-m", "stream_sync"]
KEY = re.compile(r"ssk_[0-9A-Za-z]{12}_[0-9A-Za-z]{43}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_args(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    args = ["--data-dir", str(tmp_path / "data")]
    if request.param == "postgresql":
        with fresh_postgres_database() as url:
            yield [*args, "--database-url", url]
    else:
        yield args


def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
    result = subprocess.run(
        [*CLI, *args], input=stdin.encode(), capture_output=True, timeout=60, check=False
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def ok(*args: str, stdin: str = "") -> str:
    code, out, err = run(*args, stdin=stdin)
    assert code == 0, err
    return out


def test_users_channels_keys_and_servers(store_args: list[str]) -> None:
    s = store_args
    ok("channels", "create", "early", *s)  # before any account: no owner yet
    ok(
        "users",
        "create",
        "boss@example.com",
        "--admin",
        "--password-stdin",
        *s,
        stdin="boss passphrase 1\n",
    )
    ok("users", "create", "kim@example.com", "--password-stdin", *s, stdin="kim passphrase 12\n")
    users = ok("users", "list", *s)
    assert re.search(r"boss@example\.com\s+admin\s", users)
    assert re.search(r"kim@example\.com\s+streamer\s", users)

    out = ok("channels", "create", "kims", "--owner", "kim@example.com", *s)
    first_key = KEY.search(out)
    assert first_key is not None
    rotated = ok("keys", "rotate", "kims", "--overlap", "120", *s)
    assert "works until" in rotated
    second_key = KEY.search(rotated)
    assert second_key is not None
    assert second_key.group(0) != first_key.group(0)
    reset = ok("keys", "reset", "kims", *s)
    assert "No longer valid" in reset
    assert first_key.group(0)[4:16] in reset
    assert second_key.group(0)[4:16] in reset
    revoked = ok("keys", "revoke", "kims", *s)
    assert "Revoked:" in revoked

    ok("ingest-servers", "add", "eu-1", "rtmp://eu-1.example.com/live", "--region", "eu", *s)
    assert "eu-1" in ok("ingest-servers", "list", *s)
    assert "eu-1" in ok("channels", "map", "kims", "eu-1", *s)
    code, _, err = run("ingest-servers", "add", "bad", "http://x", *s)
    assert code == 1
    assert "rtmp://" in err
    assert err.count("\n") == 1

    ok("users", "disable", "kim@example.com", *s)
    assert re.search(r"kim@example\.com\s+streamer\s.*disabled", ok("users", "list", *s))
    code, _, err = run("users", "disable", "boss@example.com", *s)
    assert code == 1
    assert "last" in err

    code, _, err = run(
        "users", "create", "weak@example.com", "--password-stdin", *s, stdin="short\n"
    )
    assert code == 1
    assert "Traceback" not in err
    code, _, err = run("keys", "reset", "nope", *s)
    assert code == 1
    assert "Traceback" not in err
    ok("db", "upgrade", *s)


def test_db_backup_is_a_consistent_private_copy(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    ok("channels", "create", "backed-up", *data)
    target = tmp_path / "backup.db"
    ok("db", "backup", str(target), *data)
    assert target.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(target) as copy:
        names = [row[0] for row in copy.execute("SELECT name FROM channels")]
    assert names == ["backed-up"]
    code, _, err = run("db", "backup", str(target), *data)
    assert code == 1
    assert "exists" in err
    ok("db", "backup", str(target), "--overwrite", *data)


def test_db_backup_points_postgres_users_to_pg_dump(tmp_path: Path) -> None:
    code, _, err = run(
        "db",
        "backup",
        str(tmp_path / "x"),
        "--data-dir",
        str(tmp_path),
        "--database-url",
        "postgresql+asyncpg://postgres@127.0.0.1/test",
    )
    assert code == 1
    assert "pg_dump" in err


async def test_secrets_rotate_keeps_every_key_working(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data = ["--data-dir", str(data_dir)]
    key = KEY.search(ok("channels", "create", "kept", *data))
    assert key is not None
    async with open_store(Settings(data_dir=data_dir)) as store, store.sessions() as session:
        hook = await endpoints.create_endpoint(
            session, secrets=store.secrets, url="https://example.com/h", actor=Actor.cli()
        )
    async with open_store(Settings(data_dir=data_dir)) as store, store.sessions() as session:
        channel_id = await session.scalar(select(Channel.id))
        assert channel_id is not None
        push_key = "live_" + "p" * 30
    async with open_store(Settings(data_dir=data_dir)) as store, store.sessions() as session:
        await targets.create_target(
            session,
            secrets=store.secrets,
            channel_id=channel_id,
            name="YouTube",
            url="rtmp://a.example/live2",
            key=push_key,
            actor=Actor.cli(),
        )
    before = (data_dir / "secrets" / "hmac.key").read_bytes()
    assert "re-protected 1 keys" in ok("secrets", "rotate", *data)
    assert (data_dir / "secrets" / "hmac.key").read_bytes() != before

    settings = Settings(data_dir=data_dir)
    async with open_store(settings) as store:
        async with store.sessions() as session:
            check = await service.verify_key(session, secrets=store.secrets, presented=key.group(0))
        assert check.ok
        assert not store.secrets.previous  # the old generation is gone
        async with store.sessions() as session:
            revealed = await service.reveal_key(
                session, secrets=store.secrets, channel_id=check.channel_id, actor=Actor.cli()
            )
        assert revealed == key.group(0)
        async with store.sessions() as session:  # webhook secrets are re-protected too
            blob = await session.scalar(
                select(WebhookEndpoint.secret_ciphertext).where(
                    WebhookEndpoint.id == hook.endpoint.id
                )
            )
        assert blob is not None
        assert endpoints.decrypt_secret(store.secrets, hook.endpoint.id, blob) == hook.secret
        async with store.sessions() as session:  # and the platforms' keys of push targets
            [outputs] = await load_outputs(session, store.secrets, [channel_id])
        assert [target.stream for target in outputs.targets] == [push_key]
