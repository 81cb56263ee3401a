"""Migrations 0003 (outbox, per-channel sequence, fencing, database locks) and 0005 (fencing
sequence) on both engines.

The models-versus-migrations comparison lives in test_migrations.py; these tests
cover what it cannot see: data, the counter row, SQLite's AUTOINCREMENT, downgrade.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync import audit
from stream_sync.credentials import ServerSecrets, create_channel, delete_channel, reset_key
from stream_sync.db import current_revision, downgrade, session_factory, upgrade
from stream_sync.monitor import lifecycle
from stream_sync.state import outbox
from stream_sync.state.database import DatabaseFencing
from stream_sync.state.interfaces import PublishStarted

ACTOR = audit.Actor.cli()
NEW_TABLES = {"event_outbox", "counters", "publish_locks", "consumer_cursors"}


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))


async def _columns(engine: AsyncEngine, table: str) -> set[str]:
    async with engine.connect() as conn:
        columns = await conn.run_sync(lambda sync: sa.inspect(sync).get_columns(table))
    return {column["name"] for column in columns}


async def test_the_fencing_counter_starts_at_zero(fresh_engine: AsyncEngine) -> None:
    await upgrade(fresh_engine)
    async with fresh_engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT name, value FROM counters"))).all()
    assert [tuple(row) for row in rows] == [("fencing", 0)]
    assert await DatabaseFencing(session_factory(fresh_engine)).next_token() == 1


async def test_downgrade_to_0002_and_up_again_keeps_the_data(
    fresh_engine: AsyncEngine, server_secrets: ServerSecrets
) -> None:
    await upgrade(fresh_engine, "0002")
    sessions = session_factory(fresh_engine)
    async with fresh_engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO channels (public_id, name, created_at) "
                "VALUES ('ch_old', 'legacy', CURRENT_TIMESTAMP)"
            )
        )
    await upgrade(fresh_engine)
    async with fresh_engine.connect() as conn:
        seqs = (await conn.execute(sa.text("SELECT name, event_seq FROM channels"))).all()
    assert [tuple(row) for row in seqs] == [("legacy", 0)]  # the server default filled it

    async with sessions() as session:
        created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
        started, _, _ = await lifecycle.publish_started(
            sessions,
            event=PublishStarted(created.channel_id, created.key_id, "c1", None, "node-1"),
            remote_address="",
            fencing_token=3,
            test=False,
            default_grace=30,
            now=1_700_000_000.0,
        )
    await downgrade(fresh_engine, "0002")
    assert await current_revision(fresh_engine) == "0002"
    assert not NEW_TABLES & await _tables(fresh_engine)
    assert "event_seq" not in await _columns(fresh_engine, "channels")
    assert "fencing_token" not in await _columns(fresh_engine, "publish_sessions")
    async with fresh_engine.connect() as conn:
        ids = (await conn.execute(sa.text("SELECT id FROM publish_sessions"))).scalars().all()
    assert ids == [started.session_id]

    await upgrade(fresh_engine)
    async with sessions() as session:
        await reset_key(session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR)
        (_, event), _reset = await outbox.read_since(session, after_id=0)  # KeyRevoked, the reset
    assert event.channel_id == created.channel_id  # type: ignore[attr-defined]


async def test_sqlite_never_reuses_channel_or_outbox_ids(
    sqlite_engine: AsyncEngine, server_secrets: ServerSecrets
) -> None:
    await upgrade(sqlite_engine)
    async with sqlite_engine.connect() as conn:
        for table in ("channels", "event_outbox"):
            sql = await conn.scalar(
                sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"),
                {"t": table},
            )
            assert "AUTOINCREMENT" in sql, table  # a later batch rebuild must keep it
    sessions = session_factory(sqlite_engine)
    async with sessions() as session:
        first = await create_channel(session, secrets=server_secrets, name="a", actor=ACTOR)
        await delete_channel(session, channel_id=first.channel_id, actor=ACTOR)
        second = await create_channel(session, secrets=server_secrets, name="b", actor=ACTOR)
        last = await outbox.last_id(session)
        async with session.begin():
            await session.execute(sa.text("DELETE FROM event_outbox"))  # retention emptied it
        await reset_key(session, secrets=server_secrets, channel_id=second.channel_id, actor=ACTOR)
        (row_id, _), _reset = await outbox.read_since(session, after_id=0)
    assert second.channel_id > first.channel_id
    assert row_id > last


async def test_sqlite_audit_trigger_survives_the_channels_rebuild(
    sqlite_engine: AsyncEngine, server_secrets: ServerSecrets
) -> None:
    await upgrade(sqlite_engine)
    sessions = session_factory(sqlite_engine)
    async with sessions() as session:
        created = await create_channel(session, secrets=server_secrets, name="a", actor=ACTOR)
        # The FK's SET NULL on the channel's audit rows is still let through ...
        await delete_channel(session, channel_id=created.channel_id, actor=ACTOR)
    # ... and any other UPDATE is still refused.
    with pytest.raises(sa.exc.IntegrityError, match="append-only"):
        async with sqlite_engine.begin() as conn:
            await conn.execute(sa.text("UPDATE audit_log SET action = 'x'"))


async def test_one_open_session_per_channel_is_enforced(engine: AsyncEngine) -> None:
    """The database refuses a second open session for a channel (0004's partial index)."""
    async with engine.begin() as connection:
        await connection.execute(
            sa.text(
                "INSERT INTO channels (public_id, name, created_at, event_seq, test_mode) "
                "VALUES ('ch_x', 'x', CURRENT_TIMESTAMP, 0, false)"
            )
        )
    insert = sa.text(
        "INSERT INTO publish_sessions (channel_id, key_id, node, started_at, media_bytes, "
        "video_frames, audio_frames) VALUES (1, 'k', 'n', CURRENT_TIMESTAMP, 0, 0, 0)"
    )
    async with engine.begin() as connection:
        await connection.execute(insert)
    with pytest.raises(sa.exc.IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(insert)


async def test_0005_tokens_go_on_from_the_counter_and_back(fresh_engine: AsyncEngine) -> None:
    """PostgreSQL moves the counter into a sequence and back; SQLite keeps the row."""
    await upgrade(fresh_engine, "0004")
    async with fresh_engine.begin() as conn:
        await conn.execute(sa.text("UPDATE counters SET value = 41 WHERE name = 'fencing'"))
    await upgrade(fresh_engine)
    fencing = DatabaseFencing(session_factory(fresh_engine))
    assert await fencing.current() == 41
    assert [await fencing.next_token() for _ in range(2)] == [42, 43]

    await downgrade(fresh_engine, "0004")
    async with fresh_engine.connect() as conn:
        value = await conn.scalar(sa.text("SELECT value FROM counters WHERE name = 'fencing'"))
    assert value == 43
    await upgrade(fresh_engine)
    assert await DatabaseFencing(session_factory(fresh_engine)).next_token() == 44
