from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.credentials import (
    ChannelNotFound,
    ServerSecrets,
    create_channel,
    delete_channel,
)
from stream_sync.monitor import (
    SessionView,
    close_open_sessions,
    end_session,
    list_sessions,
    start_session,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ACTOR = audit.Actor.cli()
SECRETS = ServerSecrets(os.urandom(32), os.urandom(32))


async def _channel(session: AsyncSession, name: str = "main") -> tuple[int, str]:
    created = await create_channel(session, secrets=SECRETS, name=name, actor=ACTOR)
    return created.channel_id, created.key_id


async def test_start_end_and_list(session: AsyncSession) -> None:
    channel_id, key_id = await _channel(session)
    session_id = await start_session(
        session,
        channel_id=channel_id,
        key_id=key_id,
        node="node-1",
        remote_address="192.0.2.1:50000",
        started_at=T0,
    )
    assert not session.in_transaction()
    [live] = await list_sessions(session, channel_id=channel_id)
    assert live == SessionView(
        id=session_id,
        channel_id=channel_id,
        key_id=key_id,
        node="node-1",
        remote_address="192.0.2.1:50000",
        started_at=T0,
        ended_at=None,
        end_reason=None,
        media_bytes=0,
        video_frames=0,
        audio_frames=0,
        video_codec=None,
        audio_codec=None,
    )
    await end_session(
        session,
        session_id=session_id,
        reason="client closed",
        media_bytes=12_345_678_901,  # beyond 32 bits
        video_frames=900,
        audio_frames=1400,
        video_codec="avc1",
        audio_codec="mp4a",
        ended_at=T0 + MINUTE,
    )
    [ended] = await list_sessions(session, channel_id=channel_id)
    assert (ended.ended_at, ended.end_reason, ended.media_bytes, ended.video_codec) == (
        T0 + MINUTE,
        "client closed",
        12_345_678_901,
        "avc1",
    )
    assert (ended.video_frames, ended.audio_frames, ended.audio_codec) == (900, 1400, "mp4a")
    # Ending twice changes nothing: the first end wins.
    await end_session(
        session,
        session_id=session_id,
        reason="again",
        media_bytes=1,
        video_frames=1,
        audio_frames=1,
        video_codec=None,
        audio_codec=None,
    )
    assert await list_sessions(session, channel_id=channel_id) == [ended]


async def test_list_is_newest_first_per_channel_and_pages(session: AsyncSession) -> None:
    main, key = await _channel(session, "main")
    other, other_key = await _channel(session, "other")
    ids = [
        await start_session(
            session,
            channel_id=main,
            key_id=key,
            node="node-1",
            remote_address=None,
            started_at=T0 + i * MINUTE,
        )
        for i in range(5)
    ]
    await start_session(
        session, channel_id=other, key_id=other_key, node="node-1", remote_address=None
    )
    first_page = await list_sessions(session, channel_id=main, limit=2)
    assert [s.id for s in first_page] == ids[::-1][:2]
    second_page = await list_sessions(
        session, channel_id=main, limit=2, before_id=first_page[-1].id
    )
    assert [s.id for s in second_page] == ids[::-1][2:4]
    assert [s.id for s in await list_sessions(session, channel_id=main)] == ids[::-1]
    assert len(await list_sessions(session, channel_id=other)) == 1


async def test_close_open_sessions_of_a_crashed_node(session: AsyncSession) -> None:
    channel_id, key_id = await _channel(session)

    async def start(node: str) -> int:
        return await start_session(
            session, channel_id=channel_id, key_id=key_id, node=node, remote_address=None
        )

    crashed = [await start("node-1"), await start("node-1")]
    ended = await start("node-1")
    await end_session(
        session,
        session_id=ended,
        reason="done",
        media_bytes=1,
        video_frames=1,
        audio_frames=1,
        video_codec=None,
        audio_codec=None,
        ended_at=T0,
    )
    elsewhere = await start("node-2")
    closed = await close_open_sessions(
        session, node="node-1", reason="node restarted", ended_at=T0 + MINUTE
    )
    assert sorted(event.session_id or 0 for event in closed) == crashed
    by_id = {s.id: s for s in await list_sessions(session, channel_id=channel_id)}
    for session_id in crashed:
        assert (by_id[session_id].ended_at, by_id[session_id].end_reason) == (
            T0 + MINUTE,
            "node restarted",
        )
    assert (by_id[ended].ended_at, by_id[ended].end_reason) == (T0, "done")
    assert by_id[elsewhere].ended_at is None  # another node's live session
    assert await close_open_sessions(session, node="node-1", reason="again") == []


async def test_overlong_values_are_cut_not_refused(session: AsyncSession) -> None:
    channel_id, key_id = await _channel(session)
    session_id = await start_session(
        session, channel_id=channel_id, key_id=key_id, node="n" * 100, remote_address="a" * 100
    )
    await end_session(
        session,
        session_id=session_id,
        reason="r" * 500,
        media_bytes=-5,
        video_frames=0,
        audio_frames=0,
        video_codec="v" * 40,
        audio_codec="a" * 40,
    )
    [view] = await list_sessions(session, channel_id=channel_id)
    assert (len(view.node), len(view.remote_address or ""), len(view.end_reason or "")) == (
        64,
        64,
        128,
    )
    assert (view.video_codec, view.audio_codec, view.media_bytes) == ("v" * 16, "a" * 16, 0)


async def test_a_session_for_a_deleted_channel(session: AsyncSession) -> None:
    channel_id, key_id = await _channel(session)
    await start_session(
        session, channel_id=channel_id, key_id=key_id, node="node-1", remote_address=None
    )
    await delete_channel(session, channel_id=channel_id, actor=ACTOR)
    assert await list_sessions(session, channel_id=channel_id) == []  # cascaded
    with pytest.raises(ChannelNotFound):
        await start_session(
            session, channel_id=channel_id, key_id=key_id, node="node-1", remote_address=None
        )
    assert not session.in_transaction()
