from __future__ import annotations

import asyncio
import os
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stream_sync import audit
from stream_sync.credentials import (
    ChannelExists,
    ChannelNotFound,
    ConcurrentChange,
    GeneratedKey,
    InvalidChannelName,
    KeyDecryptionError,
    RefusalReason,
    ServerSecrets,
    create_channel,
    find_channel,
    generate_key,
    list_channels,
    mark_used,
    reset_key,
    reveal_key,
    service,
    verify_key,
)
from stream_sync.db import StreamKey

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2025, 3, 2, 8, 30, tzinfo=UTC)
ACTOR = audit.Actor.cli()


async def test_created_channel_key_verifies(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(
        session, secrets=server_secrets, actor=ACTOR, name="main", now=T0
    )
    assert re.fullmatch(r"ch_[0-9A-Za-z]{16}", created.public_id)
    assert created.name == "main"
    check = await verify_key(session, secrets=server_secrets, presented=created.key)
    assert check.ok
    assert check.reason is None
    assert (check.key_id, check.channel_id, check.channel_name) == (
        created.key_id,
        created.channel_id,
        "main",
    )
    assert not session.in_transaction()  # the service committed its own work


async def test_results_never_show_the_key_in_repr(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    reset = await reset_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
    )
    for result, key in ((created, created.key), (reset, reset.key)):
        assert key not in repr(result)
        assert key.split("_")[2] not in repr(result)


async def test_only_the_hmac_and_ciphertext_are_stored(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    row = await session.scalar(select(StreamKey))
    await session.commit()
    assert row is not None
    secret = created.key.split("_")[2].encode()
    assert len(row.key_hash) == 32
    assert secret not in row.key_hash
    assert secret not in row.ciphertext


@pytest.mark.parametrize("name", ["a", "main", "my-channel_2", "0day", "x" * 64])
async def test_valid_names_are_accepted(
    session: AsyncSession, server_secrets: ServerSecrets, name: str
) -> None:
    assert (
        await create_channel(session, secrets=server_secrets, actor=ACTOR, name=name)
    ).name == name


@pytest.mark.parametrize(
    "name",
    ["", "Main", "-lead", "_lead", "with space", "dot.name", "é", "x" * 65, "main\n", "a/b"],
)
async def test_invalid_names_are_refused(
    session: AsyncSession, server_secrets: ServerSecrets, name: str
) -> None:
    with pytest.raises(InvalidChannelName, match="lowercase") as caught:
        await create_channel(session, secrets=server_secrets, actor=ACTOR, name=name)
    assert caught.value.code == "invalid_channel_name"
    async with session.begin():
        assert await session.scalar(select(func.count()).select_from(StreamKey)) == 0


async def test_duplicate_name_is_refused(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    with pytest.raises(ChannelExists) as caught:
        await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    assert caught.value.code == "channel_exists"
    assert len(await list_channels(session)) == 1


async def test_concurrent_creates_of_one_name_leave_one_channel(
    sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> None:
    async def create() -> object:
        async with sessions() as session:
            return await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")

    results = await asyncio.gather(create(), create(), create(), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 2
    assert all(isinstance(f, ChannelExists) for f in failures)
    async with sessions() as session:
        assert [c.name for c in await list_channels(session)] == ["main"]


async def test_list_channels_by_name_with_active_key(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    zed = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="zed", now=T0)
    alpha = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="alpha", now=T0)
    reset = await reset_key(
        session, secrets=server_secrets, channel_id=zed.channel_id, actor=ACTOR, now=T1
    )
    summaries = await list_channels(session)
    assert [s.name for s in summaries] == ["alpha", "zed"]
    assert summaries[0].key_id == alpha.key_id
    assert summaries[0].key_created_at == T0
    assert summaries[1].key_id == reset.key_id != zed.key_id
    assert summaries[1].key_created_at == T1
    assert summaries[1].created_at == T0
    assert summaries[1].created_at.tzinfo is UTC
    assert summaries[1].public_id == zed.public_id


async def test_malformed_key_is_refused_without_a_lookup(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    check = await verify_key(session, secrets=server_secrets, presented="not-a-key")
    assert (check.ok, check.reason, check.key_id, check.channel_id) == (
        False,
        RefusalReason.MALFORMED,
        None,
        None,
    )


async def test_well_formed_but_unknown_key_is_unknown(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    stranger = generate_key()
    check = await verify_key(session, secrets=server_secrets, presented=stranger.key)
    assert (check.ok, check.reason, check.key_id) == (False, RefusalReason.UNKNOWN, stranger.key_id)


async def test_known_key_id_with_wrong_secret_looks_unknown(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    forged = created.key[:-1] + ("A" if created.key[-1] != "A" else "B")
    check = await verify_key(session, secrets=server_secrets, presented=forged)
    assert check.ok is False
    assert check.reason is RefusalReason.UNKNOWN
    assert check.channel_id is None  # nothing tells the prober the id exists
    assert check.channel_name is None


async def test_other_servers_hmac_secret_does_not_verify(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    other = ServerSecrets(hmac_key=os.urandom(32), encryption_key=server_secrets.encryption_key)
    check = await verify_key(session, secrets=other, presented=created.key)
    assert check.reason is RefusalReason.UNKNOWN


async def test_reset_revokes_the_old_key_and_issues_a_new_one(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    reset = await reset_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR, now=T1
    )
    assert reset.revoked_key_ids == (created.key_id,)
    assert reset.key_id != created.key_id
    assert (reset.channel_id, reset.channel_name) == (created.channel_id, "main")

    old = await verify_key(session, secrets=server_secrets, presented=created.key)
    assert (old.ok, old.reason, old.channel_name) == (False, RefusalReason.REVOKED, "main")
    new = await verify_key(session, secrets=server_secrets, presented=reset.key)
    assert new.ok
    assert new.channel_id == created.channel_id

    async with session.begin():
        revoked_at = await session.scalar(
            select(StreamKey.revoked_at).where(StreamKey.key_id == created.key_id)
        )
    assert revoked_at == T1


async def test_revoked_key_with_wrong_secret_is_unknown_not_revoked(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    await reset_key(session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR)
    forged = created.key[:-1] + ("A" if created.key[-1] != "A" else "B")
    check = await verify_key(session, secrets=server_secrets, presented=forged)
    assert check.reason is RefusalReason.UNKNOWN


async def test_reset_of_unknown_channel(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    with pytest.raises(ChannelNotFound, match="id 4242") as caught:
        await reset_key(session, secrets=server_secrets, channel_id=4242, actor=ACTOR)
    assert caught.value.code == "channel_not_found"
    assert caught.value.status == 404


async def test_not_found_never_echoes_a_pasted_key(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    pasted = generate_key().key
    with pytest.raises(ChannelNotFound) as caught:
        await find_channel(session, pasted)
    assert pasted not in str(caught.value)
    assert pasted.split("_")[2] not in str(caught.value)


async def test_concurrent_resets_leave_exactly_one_active_key(
    sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> None:
    async with sessions() as session:
        created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")

    async def reset() -> str:
        async with sessions() as session:
            return (
                await reset_key(
                    session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
                )
            ).key

    keys = await asyncio.gather(*(reset() for _ in range(4)))
    async with sessions() as session:
        verdicts = [
            (await verify_key(session, secrets=server_secrets, presented=key)).ok for key in keys
        ]
        active = await reveal_key(
            session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
        )
    assert verdicts.count(True) == 1
    assert keys[verdicts.index(True)] == active


async def test_reveal_round_trips_and_follows_resets(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    assert (
        await reveal_key(
            session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
        )
        == created.key
    )
    reset = await reset_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
    )
    assert (
        await reveal_key(
            session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
        )
        == reset.key
    )


async def test_reveal_with_another_encryption_key_fails_cleanly(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    other = ServerSecrets(hmac_key=server_secrets.hmac_key, encryption_key=os.urandom(32))
    with pytest.raises(KeyDecryptionError):
        await reveal_key(session, secrets=other, channel_id=created.channel_id, actor=ACTOR)


async def test_mark_used_records_the_time(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    await mark_used(session, key_id=created.key_id, now=T1)
    assert not session.in_transaction()
    async with session.begin():
        last_used = await session.scalar(
            select(StreamKey.last_used_at).where(StreamKey.key_id == created.key_id)
        )
    assert last_used == T1


async def test_service_refuses_a_session_already_in_a_transaction(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    # Each call owns its unit of work; silently joining a caller's transaction
    # would make "commits before returning" a lie.
    await session.execute(select(1))
    with pytest.raises(InvalidRequestError, match="already"):
        await list_channels(session)


async def test_create_that_loses_the_race_after_its_check_reports_exists(
    session: AsyncSession, server_secrets: ServerSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deterministic stand-in for a concurrent create landing between the
    # existence check and the insert: the check misses once, the database refuses.
    await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    real_lookup = service._channel_id
    misses = iter([True])

    async def lookup_that_misses_once(session: AsyncSession, name: str) -> int | None:
        if next(misses, False):
            return None
        return await real_lookup(session, name)

    monkeypatch.setattr(service, "_channel_id", lookup_that_misses_once)
    with pytest.raises(ChannelExists):
        await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    assert not session.in_transaction()
    assert [c.name for c in await list_channels(session)] == ["main"]


async def test_reset_retries_when_the_database_refuses_the_new_key(
    session: AsyncSession, server_secrets: ServerSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    colliding = GeneratedKey(key_id=created.key_id, key=created.key)  # key_id is unique
    fresh = generate_key()
    keys = iter([colliding, fresh])
    monkeypatch.setattr(service, "generate_key", lambda: next(keys))
    reset = await reset_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
    )
    assert reset.key == fresh.key
    assert reset.revoked_key_ids == (created.key_id,)
    assert (await verify_key(session, secrets=server_secrets, presented=fresh.key)).ok


async def test_reset_gives_up_after_repeated_conflicts(
    session: AsyncSession, server_secrets: ServerSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    colliding = GeneratedKey(key_id=created.key_id, key=created.key)
    monkeypatch.setattr(service, "generate_key", lambda: colliding)
    with pytest.raises(ConcurrentChange) as caught:
        await reset_key(session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR)
    assert created.key not in str(caught.value)
    monkeypatch.undo()
    # Nothing was half-done: the original key is still the active one.
    assert (await verify_key(session, secrets=server_secrets, presented=created.key)).ok


async def test_verification_is_one_indexed_statement(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, actor=ACTOR, name="main")
    engine = session.bind
    assert isinstance(engine, AsyncEngine)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        assert (await verify_key(session, secrets=server_secrets, presented=created.key)).ok
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    [statement] = statements
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:
            plan = (
                await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", (created.key_id,))
            ).all()
        detail = " | ".join(str(row[-1]) for row in plan)
        assert "SEARCH stream_keys USING INDEX" in detail
        assert "SCAN" not in detail
