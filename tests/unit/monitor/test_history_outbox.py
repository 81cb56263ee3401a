"""Session rows and their lifecycle events land in one transaction, or neither does."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from stream_sync import audit
from stream_sync.credentials import ChannelNotFound, ServerSecrets, create_channel, delete_channel
from stream_sync.db import Channel, PublishSession, session_factory
from stream_sync.db.models import OutboxEvent
from stream_sync.monitor import history
from stream_sync.state import outbox
from stream_sync.state.interfaces import BusEvent, PublishEnded, PublishStarted

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SECRETS = ServerSecrets(os.urandom(32), os.urandom(32))


async def _channel(session: AsyncSession, name: str = "main") -> tuple[int, str]:
    created = await create_channel(session, secrets=SECRETS, name=name, actor=audit.Actor.cli())
    return created.channel_id, created.key_id


def _started(channel_id: int, key_id: str, node: str = "node-1") -> PublishStarted:
    return PublishStarted(channel_id, key_id, "conn-1", None, node)


def _ended(started: PublishStarted, reason: str = "client closed") -> PublishEnded:
    return PublishEnded(
        started.channel_id,
        started.key_id,
        started.connection_id,
        started.session_id,
        reason,
        12_345_678_901,
        900,
        1400,
        "avc1",
        "mp4a",
        started.node,
    )


async def _outbox(session: AsyncSession) -> list[BusEvent]:
    return [event for _, event in await outbox.read_since(session, after_id=0)]


async def _count(session: AsyncSession, model: Any) -> int:
    async with session.begin():
        return await session.scalar(select(func.count()).select_from(model)) or 0


async def test_start_and_end_stage_their_events(session: AsyncSession) -> None:
    channel_id, key_id = await _channel(session)
    started = await history.record_publish_started(
        session,
        event=_started(channel_id, key_id),
        remote_address="192.0.2.1:50000",
        fencing_token=42,
        started_at=T0,
    )
    assert not session.in_transaction()
    assert started.session_id is not None
    assert started == dataclasses.replace(
        _started(channel_id, key_id), session_id=started.session_id, seq=1
    )
    async with session.begin():
        row = await session.get_one(PublishSession, started.session_id)
        assert (row.fencing_token, row.started_at, row.node) == (42, T0, "node-1")
        session.expunge(row)
    ended = await history.record_publish_ended(
        session, event=_ended(started), ended_at=T0 + timedelta(minutes=1)
    )
    assert ended == dataclasses.replace(_ended(started), seq=2)
    [view] = await history.list_sessions(session, channel_id=channel_id)
    assert (view.ended_at, view.end_reason, view.media_bytes, view.video_codec) == (
        T0 + timedelta(minutes=1),
        "client closed",
        12_345_678_901,
        "avc1",
    )
    assert await _outbox(session) == [started, ended]
    # Ending again records nothing and stages nothing: the first end wins.
    assert await history.record_publish_ended(session, event=_ended(started, "again")) is None
    assert await _outbox(session) == [started, ended]


async def test_a_failure_after_staging_rolls_back_the_row_too(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel_id, key_id = await _channel(session)
    stage = outbox.stage

    async def stage_then_fail(session: AsyncSession, event: BusEvent) -> BusEvent:
        await stage(session, event)
        raise OSError("connection lost")

    monkeypatch.setattr(outbox, "stage", stage_then_fail)
    with pytest.raises(OSError, match="connection lost"):
        await history.record_publish_started(
            session, event=_started(channel_id, key_id), remote_address=None
        )
    assert not session.in_transaction()
    assert await _count(session, PublishSession) == 0
    assert await _count(session, OutboxEvent) == 0
    async with session.begin():
        assert await session.scalar(select(Channel.event_seq)) == 0

    monkeypatch.undo()
    started = await history.record_publish_started(
        session, event=_started(channel_id, key_id), remote_address=None
    )
    monkeypatch.setattr(outbox, "stage", stage_then_fail)
    with pytest.raises(OSError, match="connection lost"):
        await history.record_publish_ended(session, event=_ended(started))
    [view] = await history.list_sessions(session, channel_id=channel_id)
    assert view.ended_at is None  # still open: the end was rolled back with its event
    assert await _outbox(session) == [started]


async def test_a_deleted_channel_records_nothing(session: AsyncSession) -> None:
    channel_id, key_id = await _channel(session)
    started = await history.record_publish_started(
        session, event=_started(channel_id, key_id), remote_address=None
    )
    await delete_channel(session, channel_id=channel_id, actor=audit.Actor.cli())
    staged = len(await _outbox(session))  # the start and the key's revocation
    assert await history.record_publish_ended(session, event=_ended(started)) is None
    with pytest.raises(ChannelNotFound):
        await history.record_publish_started(
            session, event=_started(channel_id, key_id), remote_address=None
        )
    assert not session.in_transaction()
    assert len(await _outbox(session)) == staged


async def test_an_end_without_a_session_row_is_staged_alone(session: AsyncSession) -> None:
    channel_id, key_id = await _channel(session)
    unrecorded = _started(channel_id, key_id)  # its start could not be written
    ended = await history.record_publish_ended(session, event=_ended(unrecorded))
    assert ended == dataclasses.replace(_ended(unrecorded), seq=1)
    assert await _outbox(session) == [ended]


async def test_closing_a_lost_nodes_sessions_stages_their_ends(session: AsyncSession) -> None:
    main, main_key = await _channel(session, "main")
    other, other_key = await _channel(session, "other")
    lost = [
        await history.record_publish_started(
            session, event=_started(channel, key), remote_address=None
        )
        for channel, key in ((main, main_key), (other, other_key))
    ]
    elsewhere = await history.record_publish_started(
        session, event=_started(main, main_key, "node-2"), remote_address=None
    )
    closed = await history.close_open_sessions(
        session, node="node-1", reason="node lost", ended_at=T0
    )
    assert closed == [
        PublishEnded(
            channel_id=started.channel_id,
            key_id=started.key_id,
            connection_id="",
            session_id=started.session_id,
            reason="node lost",
            media_bytes=0,
            video_frames=0,
            audio_frames=0,
            video_codec=None,
            audio_codec=None,
            node="node-1",
            seq=seq,
        )
        for started, seq in zip(lost, (3, 2), strict=True)  # main had node-2's start too
    ]
    assert await _outbox(session) == [*lost, elsewhere, *closed]
    # The lost node comes back and ends its publish: already ended, nothing staged.
    assert await history.record_publish_ended(session, event=_ended(lost[0])) is None
    assert await history.close_open_sessions(session, node="node-1", reason="again") == []
    by_id = {view.id: view for view in await history.list_sessions(session, channel_id=main)}
    assert by_id[elsewhere.session_id or 0].ended_at is None
    assert (by_id[lost[0].session_id or 0].ended_at, by_id[lost[0].session_id or 0].end_reason) == (
        T0,
        "node lost",
    )


async def test_lifecycle_writes_racing_a_channel_deletion_never_deadlock(
    engine: AsyncEngine,
) -> None:
    # Everything locks the channel row first, as the deletion does: on PostgreSQL
    # a session-row-then-channel-row order would deadlock with its cascade.
    sessions = session_factory(engine)

    async def delete(channel_id: int) -> None:
        async with sessions() as session:
            await delete_channel(session, channel_id=channel_id, actor=audit.Actor.cli())

    async def end(started: PublishStarted) -> PublishEnded | None:
        async with sessions() as session:
            return await history.record_publish_ended(session, event=_ended(started))

    async def start(event: PublishStarted) -> PublishStarted | None:
        async with sessions() as session:
            try:
                return await history.record_publish_started(
                    session, event=event, remote_address=None
                )
            except ChannelNotFound:
                return None

    async def close() -> list[PublishEnded]:
        async with sessions() as session:
            return await history.close_open_sessions(session, node="node-1", reason="lost")

    for round_ in range(10):
        async with sessions() as session:
            channel_id, key_id = await _channel(session, f"c{round_}")
        live = [await start(_started(channel_id, key_id)) for _ in range(3)]
        await asyncio.gather(
            delete(channel_id),
            *(end(started) for started in live[:2] if started is not None),
            start(_started(channel_id, key_id)),
            close(),
        )
        async with sessions() as session:
            assert await history.list_sessions(session, channel_id=channel_id) == []
