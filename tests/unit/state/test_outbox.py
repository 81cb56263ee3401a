"""The event outbox on both database engines: staging, sequence numbers, reading back."""

from __future__ import annotations

import asyncio
import dataclasses
import types
import typing
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stream_sync import audit
from stream_sync.credentials import ChannelNotFound, delete_channel
from stream_sync.db import Channel, session_factory
from stream_sync.db.models import OutboxEvent, utcnow
from stream_sync.state import outbox
from stream_sync.state.codec import EVENT_TYPES
from stream_sync.state.interfaces import (
    BusEvent,
    KeyRevoked,
    NodeLost,
    PublishEnded,
    PublishRefused,
    PublishStarted,
    StopRequested,
)

from .database_engines import add_channel, open_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with open_database(request, tmp_path, request.param) as (engine, _):
        yield engine


@pytest.fixture
def sessions(db: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(db)


def started(channel_id: int, connection: str = "c1") -> PublishStarted:
    return PublishStarted(channel_id, "KeyIdKeyId12", connection, None, "node-1")


async def stage(sessions: async_sessionmaker[AsyncSession], event: BusEvent) -> BusEvent:
    async with sessions() as session, session.begin():
        return await outbox.stage(session, event)


async def read(
    sessions: async_sessionmaker[AsyncSession], after_id: int = 0, **options: Any
) -> list[tuple[int, BusEvent]]:
    async with sessions() as session:
        return await outbox.read_since(session, after_id=after_id, **options)


async def test_stage_numbers_each_channel_and_reads_back_in_id_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    main = await add_channel(sessions, "main")
    other = await add_channel(sessions, "other")
    staged = [
        await stage(sessions, started(main, "a")),
        await stage(sessions, started(other, "b")),
        await stage(sessions, KeyRevoked(main, "KeyIdKeyId12")),
        await stage(sessions, NodeLost("node-2")),
        await stage(sessions, started(main, "c")),
    ]
    assert [getattr(event, "seq", None) for event in staged] == [1, 1, None, None, 3]
    rows = await read(sessions)
    assert [event for _, event in rows] == staged
    assert [row_id for row_id, _ in rows] == sorted(row_id for row_id, _ in rows)
    async with sessions() as session:
        assert await outbox.last_id(session) == rows[-1][0]
        stored = (
            await session.execute(
                select(
                    OutboxEvent.type, OutboxEvent.channel_id, OutboxEvent.seq, OutboxEvent.node
                ).order_by(OutboxEvent.id)
            )
        ).all()
    # KeyRevoked has no seq field, but takes the channel's number in the outbox.
    assert [tuple(row) for row in stored] == [
        ("PublishStarted", main, 1, "node-1"),
        ("PublishStarted", other, 1, "node-1"),
        ("KeyRevoked", main, 2, None),
        ("NodeLost", None, None, "node-2"),
        ("PublishStarted", main, 3, "node-1"),
    ]
    assert await read(sessions, after_id=rows[-1][0], overlap=0, grace=timedelta(0)) == []


async def test_stage_needs_an_open_transaction_and_an_existing_channel(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        with pytest.raises(RuntimeError, match="transaction"):
            await outbox.stage(session, NodeLost("node-1"))
        with pytest.raises(ChannelNotFound):
            async with session.begin():
                await outbox.stage(session, started(404))
    assert await read(sessions) == []


async def test_stage_each_numbers_one_event_per_channel_and_leaves_out_the_gone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    main = await add_channel(sessions, "main")
    other = await add_channel(sessions, "other")
    await stage(sessions, started(main, "a"))
    async with sessions() as session, session.begin():
        staged = await outbox.stage_each(
            session, [started(other, "b"), started(404, "gone"), started(main, "c")]
        )
    assert [(e.channel_id, e.connection_id, e.seq) for e in staged] == [
        (other, "b", 1),
        (main, "c", 2),
    ]
    assert [event for _, event in await read(sessions)][1:] == staged
    async with sessions() as session, session.begin():
        with pytest.raises(ValueError, match="one event per channel"):
            await outbox.stage_each(session, [started(main), started(main)])
        with pytest.raises(ValueError, match="one event per channel"):
            await outbox.stage_each(session, [NodeLost("node-1")])
        assert await outbox.stage_each(session, []) == []


async def test_a_rolled_back_stage_leaves_no_row_and_no_gap(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    channel = await add_channel(sessions, "main")

    async def stage_then_fail() -> None:
        async with sessions() as session, session.begin():
            await outbox.stage(session, started(channel))
            raise OSError("connection lost")

    with pytest.raises(OSError, match="connection lost"):
        await stage_then_fail()
    assert await read(sessions) == []
    assert getattr(await stage(sessions, started(channel)), "seq", None) == 1


async def test_concurrent_stagers_get_gapless_distinct_numbers(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    channel = await add_channel(sessions, "main")
    staged = await asyncio.gather(*(stage(sessions, started(channel, f"c{i}")) for i in range(20)))
    assert sorted(getattr(event, "seq", 0) for event in staged) == list(range(1, 21))
    rows = await read(sessions)
    # Per channel, id order is seq order: the next number waits for the commit.
    assert [getattr(event, "seq", 0) for _, event in rows] == list(range(1, 21))
    async with sessions() as session:
        assert await session.scalar(select(Channel.event_seq).where(Channel.id == channel)) == 20


def _sample(name: str, hint: Any, channel_id: int) -> Any:
    if name == "channel_id":
        return channel_id
    if name == "seq":
        return 0
    if isinstance(hint, types.UnionType):  # X | None: the non-None side
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is dict:
        return {"media_bytes": 12_345_678_901, "video_frames": 3}
    if typing.get_origin(hint) is list:
        return [f"{name}-1", f"{name}-é"]
    return {int: 2**40 + 1, float: 1_700_000_000.25, str: f"{name}-é", bool: True}[hint]


def _example(cls: type[BusEvent], channel_id: int) -> BusEvent:
    hints = typing.get_type_hints(cls)
    values = {f.name: _sample(f.name, hints[f.name], channel_id) for f in dataclasses.fields(cls)}
    return cls(**values)


async def test_every_event_type_round_trips(sessions: async_sessionmaker[AsyncSession]) -> None:
    channel = await add_channel(sessions, "main")
    examples = [_example(cls, channel) for cls in EVENT_TYPES.values()]
    examples.append(PublishRefused(None, None, "malformed", "192.0.2.1:1935", "node-1"))
    staged = [await stage(sessions, event) for event in examples]
    assert [event for _, event in await read(sessions)] == staged
    for before, after in zip(examples, staged, strict=True):
        if hasattr(before, "seq"):
            assert dataclasses.replace(after, seq=0) == before  # type: ignore[call-arg]
        else:
            assert after == before


async def test_a_deleted_channel_keeps_its_outbox_rows(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    channel = await add_channel(sessions, "main")
    first = await stage(sessions, started(channel))
    await stage(sessions, StopRequested(channel))
    async with sessions() as session:
        await delete_channel(session, channel_id=channel, actor=audit.Actor.cli())
        columns = (await session.execute(select(OutboxEvent.channel_id, OutboxEvent.seq))).all()
    assert [tuple(row) for row in columns] == [(None, 1), (None, 2)]  # the FK nulled them
    events = [event for _, event in await read(sessions)]
    assert events[0] == first
    assert isinstance(events[1], StopRequested)
    assert events[1].channel_id == channel  # the payload keeps it


async def test_cursors_insert_overwrite_and_join_the_callers_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        assert await outbox.get_cursor(session, name="dashboard") == 0
        await outbox.set_cursor(session, name="dashboard", last_event_id=5)
        await outbox.set_cursor(session, name="relay", last_event_id=9)
        assert not session.in_transaction()
        assert await outbox.get_cursor(session, name="dashboard") == 5
        await outbox.set_cursor(session, name="dashboard", last_event_id=12)
        await outbox.set_cursor(session, name="dashboard", last_event_id=3)  # a replay
        assert await outbox.get_cursor(session, name="dashboard") == 3
        assert await outbox.get_cursor(session, name="relay") == 9

        async def save_then_fail() -> None:
            async with session.begin():
                await outbox.set_cursor(session, name="relay", last_event_id=100)
                raise OSError("connection lost")

        with pytest.raises(OSError, match="connection lost"):
            await save_then_fail()
        assert await outbox.get_cursor(session, name="relay") == 9
        with pytest.raises(ValueError, match="64"):
            await outbox.set_cursor(session, name="x" * 65, last_event_id=1)


async def test_the_window_behind_the_cursor_is_read_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    channel = await add_channel(sessions, "main")
    for i in range(10):
        await stage(sessions, started(channel, f"c{i}"))
    rows = await read(sessions)
    ids = [row_id for row_id, _ in rows]
    # The last 3 ids behind the cursor, and the rows after it.
    again = await read(sessions, after_id=ids[6], overlap=3, grace=timedelta(0))
    assert [row_id for row_id, _ in again] == ids[4:]
    # Everything staged within the grace before the cursor's row, too.
    again = await read(sessions, after_id=ids[6], overlap=0, grace=timedelta(minutes=1))
    assert [row_id for row_id, _ in again] == ids
    # A large window never crowds out new rows.
    page = await read(sessions, after_id=ids[6], limit=2, grace=timedelta(minutes=1))
    assert [row_id for row_id, _ in page] == ids[:9]


async def test_the_reader_returns_each_row_once_and_skips_what_does_not_decode(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    channel = await add_channel(sessions, "main")
    reader = outbox.OutboxReader(limit=2)
    first = await stage(sessions, started(channel, "a"))
    async with sessions() as session:
        assert [event for _, event in await reader.poll(session)] == [first]
        assert await reader.poll(session) == []
    async with sessions() as session, session.begin():
        for _ in range(3):  # a newer version's event types, say
            await session.execute(
                insert(OutboxEvent).values(
                    created_at=utcnow(), type="Future", payload={"type": "Future"}
                )
            )
    later = await stage(sessions, started(channel, "b"))
    async with sessions() as session:
        assert await reader.poll(session) == []  # two undecodable rows: still moves on
        assert [event for _, event in await reader.poll(session)] == [later]
        assert await reader.poll(session) == []
        assert reader.cursor == await outbox.last_id(session)


async def test_rows_outside_the_window_are_forgotten(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    channel = await add_channel(sessions, "main")
    reader = outbox.OutboxReader(overlap=2, grace=timedelta(seconds=30))
    for i in range(5):
        await stage(sessions, started(channel, f"c{i}"))
    async with sessions() as session:
        assert len(await reader.poll(session)) == 5
        # Age the rows: only the id window keeps them now.
        async with session.begin():
            old = utcnow() - timedelta(minutes=5)
            await session.execute(update(OutboxEvent).values(created_at=old))
        await stage(sessions, started(channel, "new"))
        assert len(await reader.poll(session)) == 1
        assert reader._returned.keys() == {reader.cursor - 1, reader.cursor}


# Out-of-order commits need two writers at once: PostgreSQL only (SQLite has one).


@pytest.fixture
async def pg_sessions(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with open_database(request, tmp_path, "postgresql") as (engine, _):
        yield session_factory(engine)


async def test_a_late_commit_with_a_smaller_id_is_still_read(
    pg_sessions: async_sessionmaker[AsyncSession],
) -> None:
    main = await add_channel(pg_sessions, "main")
    other = await add_channel(pg_sessions, "other")
    reader = outbox.OutboxReader()
    async with pg_sessions() as slow, pg_sessions() as reading:
        async with slow.begin():
            late = await outbox.stage(slow, started(main, "slow"))
            quick = await stage(pg_sessions, started(other, "quick"))
            assert [event for _, event in await reader.poll(reading)] == [quick]
        assert [event for _, event in await reader.poll(reading)] == [late]
        assert await reader.poll(reading) == []


async def test_a_late_transaction_larger_than_the_id_window_is_still_read(
    pg_sessions: async_sessionmaker[AsyncSession],
) -> None:
    main = await add_channel(pg_sessions, "main")
    other = await add_channel(pg_sessions, "other")
    async with pg_sessions() as slow, pg_sessions() as reading:
        async with slow.begin():
            late = [await outbox.stage(slow, started(main, f"s{i}")) for i in range(150)]
            await stage(pg_sessions, started(other, "quick"))
            [(cursor, _)] = await outbox.read_since(reading, after_id=0)
        # Ids alone (the last 100) would miss the first 50; the grace window does not.
        by_ids = await outbox.read_since(reading, after_id=cursor, grace=timedelta(0))
        assert len(by_ids) == 100
        again = await outbox.read_since(reading, after_id=cursor)
        assert [event for _, event in again if isinstance(event, PublishStarted)][:150] == late


def test_dedupe_keys() -> None:
    seen = outbox.SeenEvents(capacity=2)
    numbered = dataclasses.replace(started(1), seq=4)
    assert outbox.dedupe_key(numbered) == ("PublishStarted", 1, 4)
    assert seen.first_time(numbered)
    assert not seen.first_time(numbered)  # from the bus, then from the outbox
    ended = PublishEnded(1, "k", "c", 3, "done", 0, 0, 0, None, None, "n", seq=4)
    assert seen.first_time(ended)  # same seq, another type: another event
    assert seen.first_time(KeyRevoked(1, "KeyIdKeyId12"))
    assert not seen.first_time(KeyRevoked(1, "KeyIdKeyId12"))
    assert seen.first_time(numbered)  # pushed out by capacity
    assert outbox.dedupe_key(started(1)) is None  # seq 0: never recorded
    assert seen.first_time(started(1))
    assert seen.first_time(started(1))
    assert outbox.dedupe_key(NodeLost("n")) is None
