"""The control plane end to end: API over HTTP, real FFmpeg, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from stream_sync.audit import Actor
from stream_sync.db.models import Role
from stream_sync.node import Node, open_store
from stream_sync.state.interfaces import PublishEnded, PublishStarted
from tests.databases import fresh_postgres_database
from tests.integration.conftest import node_settings
from tests.support import BusRecorder, debian_ffmpeg, ffmpeg_command, require, run_process

ADMIN_PASSWORD = "the operator's passphrase"
STREAMER_PASSWORD = "the streamer's passphrase"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_node(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Node, str | None]]:
    with contextlib.ExitStack() as stack:
        url = (
            stack.enter_context(fresh_postgres_database())
            if request.param == "postgresql"
            else None
        )
        settings = node_settings(tmp_path / "data", database_url=url)
        async with open_store(settings) as store:
            node = Node(settings, store)
            await node.start()
            try:
                yield node, url
            finally:
                await node.stop()


async def sign_in(base: str, email: str, password: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base)
    response = await client.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return client


async def test_api_user_channel_publish_reset_while_live(
    database_node: tuple[Node, str | None],
) -> None:
    node, postgres = database_node
    bus = BusRecorder(node.bus)
    base = f"http://127.0.0.1:{node.http_port}"
    await node.control.create_user(
        email="admin@example.com", password=ADMIN_PASSWORD, role=Role.ADMIN, actor=Actor.cli()
    )
    admin = await sign_in(base, "admin@example.com", ADMIN_PASSWORD)
    created = await admin.post(
        "/api/users",
        json={"email": "star@example.com", "password": STREAMER_PASSWORD, "role": "streamer"},
    )
    assert created.status_code == 201
    channel = (
        await admin.post("/api/channels", json={"name": "star", "owner_email": "star@example.com"})
    ).json()

    streamer = await sign_in(base, "star@example.com", STREAMER_PASSWORD)
    key = (await streamer.post(f"/api/channels/{channel['id']}/key/reveal")).json()["stream_key"]
    url = f"{channel['server_url']}/{key}"
    publisher = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=30))
    await bus.wait_for(PublishStarted)
    detail = await live_stats(streamer, channel["id"], min_frames=15)
    assert detail["status"] == "live"

    reset = await streamer.post(f"/api/channels/{channel['id']}/key/reset")
    answered = time.monotonic()
    assert reset.status_code == 200
    ended = await bus.wait_for(PublishEnded, timeout=5)
    assert time.monotonic() - answered < 1.0
    assert ended.reason == "key revoked"
    await asyncio.wait_for(publisher.wait(), 5)
    assert publisher.returncode != 0

    for _ in range(3):
        retry = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=2))
        _, stderr = await asyncio.wait_for(retry.communicate(), 10)
        assert retry.returncode != 0
        assert "Invalid stream key" in stderr.decode()
    await node.refusals.flush(everything=True)

    sessions = (await streamer.get(f"/api/channels/{channel['id']}/sessions")).json()
    assert len(sessions) == 1
    assert sessions[0]["end_reason"] == "key revoked"
    assert sessions[0]["video_frames"] > 0
    assert sessions[0]["video_codec"] == "avc1"
    audit = (await streamer.get(f"/api/channels/{channel['id']}/audit")).json()
    actions = [row["action"] for row in audit]
    assert {"key.revealed", "key.reset", "channel.created"} <= set(actions)
    refused = [row for row in audit if row["action"] == "publish.refused"]
    assert sum(row["count"] for row in refused) == 3
    assert len(refused) <= 2  # aggregated per minute, not one row per attempt
    assert refused[0]["details"] == {"reason": "revoked_key"}

    for client in (admin, streamer):
        await client.aclose()
    await bus.close()

    if postgres is not None:
        dump = pg_dump(postgres)
        assert key not in dump
        assert key[-43:] not in dump
        assert ADMIN_PASSWORD not in dump
        assert STREAMER_PASSWORD not in dump
        assert channel["key_id"] in dump  # the dump is real: it has the key id


async def live_stats(client: httpx.AsyncClient, channel: str, min_frames: int) -> dict[str, Any]:
    """Sample the channel until it has received min_frames video frames.

    Media produces counters, not events (one event per frame would cost the ingest
    path its budget), so sampling them is the way to see frames arrive.
    """
    async with asyncio.timeout(10):
        while True:
            detail: dict[str, Any] = (await client.get(f"/api/channels/{channel}")).json()
            stats = detail.get("stats") or {}
            if stats.get("counters", {}).get("video_frames", 0) >= min_frames:
                return detail
            await asyncio.sleep(0.1)


def pg_dump(url: str) -> str:
    binary = shutil.which("pg_dump")
    require(binary is not None, "pg_dump (Debian package postgresql-client)")
    assert binary is not None
    parsed = make_url(url)
    result = subprocess.run(
        [
            binary,
            "-h",
            parsed.host or "127.0.0.1",
            "-p",
            str(parsed.port or 5432),
            "-U",
            parsed.username or "postgres",
            "--data-only",
            str(parsed.database),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return result.stdout.decode()
