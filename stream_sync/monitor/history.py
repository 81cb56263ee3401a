"""Publish sessions: one row from an accepted publish until the encoder goes away.

The ingest node writes a row when a publish is accepted and completes it when the
publish ends. A node that crashed leaves rows open; it (or whoever sees it lost)
closes them (``close_open_sessions``). Same transaction rules as the credential
service: pass an idle session, writers commit. Telemetry, not administration:
nothing here is audited.

``record_publish_started``/``record_publish_ended``/``close_open_sessions`` stage
the lifecycle event in the event outbox in the same transaction as the row, and
return it with its per-channel ``seq``: publish that on the bus after they return.
They lock the channel row first, the order channel deletion and key changes use,
so they never deadlock with them on PostgreSQL. ``start_session``/``end_session``
write the row alone (no event).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync.credentials.errors import ChannelNotFound
from stream_sync.db.models import Channel, PublishSession, utcnow
from stream_sync.state import outbox
from stream_sync.state.interfaces import PublishEnded, PublishStarted

MAX_PAGE = 500
# Column widths from the model: longer values are cut rather than refused, so a
# strange codec name or address never loses the session record.
_NODE_MAX = 64
_ADDRESS_MAX = 64
_REASON_MAX = 128
_CODEC_MAX = 16


@dataclass(frozen=True, slots=True)
class SessionView:
    id: int
    channel_id: int
    key_id: str
    node: str
    remote_address: str | None
    started_at: datetime
    ended_at: datetime | None  # None while live (or until a crashed node restarts)
    end_reason: str | None
    media_bytes: int
    video_frames: int
    audio_frames: int
    video_codec: str | None
    audio_codec: str | None


class _NothingToRecord(Exception):
    """Rolls back a write that turned out to have nothing to record."""


async def record_publish_started(
    session: AsyncSession,
    *,
    event: PublishStarted,
    remote_address: str | None,
    fencing_token: int | None = None,
    started_at: datetime | None = None,
) -> PublishStarted:
    """Insert the session row and stage ``event`` for it, in one transaction. Commits.

    Returns the event with ``session_id`` and ``seq`` filled in; the row takes its
    channel, key id and node from the event. Raises `ChannelNotFound` if the
    channel was deleted meanwhile (nothing is written).
    """
    row = _session_row(
        channel_id=event.channel_id,
        key_id=event.key_id,
        node=event.node,
        remote_address=remote_address,
        started_at=started_at,
        fencing_token=fencing_token,
    )
    try:
        async with session.begin():
            await _lock_channels(session, [event.channel_id])
            session_id = await _insert(session, row)
            staged = await outbox.stage(session, dataclasses.replace(event, session_id=session_id))
    except IntegrityError:
        # The channel was deleted between the key check and now.
        raise ChannelNotFound(f"there is no channel with id {event.channel_id}") from None
    return staged


async def record_publish_ended(
    session: AsyncSession, *, event: PublishEnded, ended_at: datetime | None = None
) -> PublishEnded | None:
    """Complete the session with the event's totals and stage ``event``. Commits.

    Returns the event with its ``seq``; None when there was nothing to record: the
    session was no longer open (ended already, closed by ``close_open_sessions``
    after this node was declared lost, or deleted with its channel), or the channel
    is gone. Then nothing is staged: whoever closed it staged its end. An event
    without ``session_id`` (its start could not be written) is staged alone.
    """
    try:
        async with session.begin():
            if not await _lock_channels(session, [event.channel_id]):
                raise _NothingToRecord
            if event.session_id is not None:
                ended = await session.scalar(
                    update(PublishSession)
                    .where(
                        PublishSession.id == event.session_id,
                        PublishSession.channel_id == event.channel_id,
                        PublishSession.ended_at.is_(None),
                    )
                    .values(
                        **_end_values(
                            reason=event.reason,
                            media_bytes=event.media_bytes,
                            video_frames=event.video_frames,
                            audio_frames=event.audio_frames,
                            video_codec=event.video_codec,
                            audio_codec=event.audio_codec,
                            ended_at=ended_at,
                        )
                    )
                    .returning(PublishSession.id)
                    .execution_options(synchronize_session=False)
                )
                if ended is None:
                    raise _NothingToRecord
            return await outbox.stage(session, event)
    except _NothingToRecord:
        return None


async def start_session(
    session: AsyncSession,
    *,
    channel_id: int,
    key_id: str,
    node: str,
    remote_address: str | None,
    started_at: datetime | None = None,
    fencing_token: int | None = None,
) -> int:
    """Record an accepted publish without an event; the new session's id. Commits."""
    row = _session_row(
        channel_id=channel_id,
        key_id=key_id,
        node=node,
        remote_address=remote_address,
        started_at=started_at,
        fencing_token=fencing_token,
    )
    try:
        async with session.begin():
            session_id = await _insert(session, row)
    except IntegrityError:
        # The channel was deleted between the key check and now.
        raise ChannelNotFound(f"there is no channel with id {channel_id}") from None
    return session_id


async def end_session(
    session: AsyncSession,
    *,
    session_id: int,
    reason: str,
    media_bytes: int,
    video_frames: int,
    audio_frames: int,
    video_codec: str | None,
    audio_codec: str | None,
    ended_at: datetime | None = None,
) -> None:
    """Complete a session with its totals, without an event. Commits.

    Only an open session is completed: ending twice, or ending a row that
    ``close_open_sessions`` or a channel deletion got to first, changes nothing.
    """
    async with session.begin():
        await session.execute(
            update(PublishSession)
            .where(PublishSession.id == session_id, PublishSession.ended_at.is_(None))
            .values(
                **_end_values(
                    reason=reason,
                    media_bytes=media_bytes,
                    video_frames=video_frames,
                    audio_frames=audio_frames,
                    video_codec=video_codec,
                    audio_codec=audio_codec,
                    ended_at=ended_at,
                )
            )
            .execution_options(synchronize_session=False)
        )


async def list_sessions(
    session: AsyncSession, *, channel_id: int, limit: int = 50, before_id: int | None = None
) -> list[SessionView]:
    """A channel's sessions, newest first; page with ``before_id``. Read-only."""
    # Plain rows, not ORM objects: nothing lands in the caller's identity map.
    query = (
        select(PublishSession.__table__)
        .where(PublishSession.channel_id == channel_id)
        .order_by(PublishSession.id.desc())
        .limit(max(1, min(limit, MAX_PAGE)))
    )
    if before_id is not None:
        query = query.where(PublishSession.id < before_id)
    async with session.begin():
        rows = (await session.execute(query)).all()
    return [_view(row) for row in rows]


async def close_open_sessions(
    session: AsyncSession, *, node: str, reason: str, ended_at: datetime | None = None
) -> list[PublishEnded]:
    """Close the sessions a node left open and stage a `PublishEnded` for each. Commits.

    For a node that restarted (call it before accepting publishers) or was declared
    lost. Totals stay as last written (0 unless the node wrote them); the events
    have no connection id. Returns the staged events, by session id, to publish.
    """
    node = node[:_NODE_MAX]
    is_open = (PublishSession.node == node, PublishSession.ended_at.is_(None))
    async with session.begin():
        channel_ids = (
            await session.scalars(select(PublishSession.channel_id).where(*is_open).distinct())
        ).all()
        if not channel_ids:
            return []
        # Sessions of channels locked here only: one started since on another
        # channel (not by a lost node) is left for the next call.
        locked = await _lock_channels(session, channel_ids)
        rows = (
            await session.execute(
                update(PublishSession)
                .where(*is_open, PublishSession.channel_id.in_(locked))
                .values(ended_at=ended_at or utcnow(), end_reason=reason[:_REASON_MAX])
                .returning(*_CLOSED_COLUMNS)
                .execution_options(synchronize_session=False)
            )
        ).all()
        events = []
        for row in sorted(rows, key=lambda row: row.id):
            ended = PublishEnded(
                channel_id=row.channel_id,
                key_id=row.key_id,
                connection_id="",
                session_id=row.id,
                reason=reason[:_REASON_MAX],
                media_bytes=row.media_bytes,
                video_frames=row.video_frames,
                audio_frames=row.audio_frames,
                video_codec=row.video_codec,
                audio_codec=row.audio_codec,
                node=row.node,
            )
            events.append(await outbox.stage(session, ended))
    return events


_CLOSED_COLUMNS = (
    PublishSession.id,
    PublishSession.channel_id,
    PublishSession.key_id,
    PublishSession.node,
    PublishSession.media_bytes,
    PublishSession.video_frames,
    PublishSession.audio_frames,
    PublishSession.video_codec,
    PublishSession.audio_codec,
)


async def _lock_channels(session: AsyncSession, channel_ids: Iterable[int]) -> list[int]:
    """Lock channel rows in id order (FOR NO KEY UPDATE: FK checks still pass); those found.

    SQLite has one writer at a time and no row locks; there this only finds them.
    """
    return list(
        (
            await session.scalars(
                select(Channel.id)
                .where(Channel.id.in_(sorted(set(channel_ids))))
                .order_by(Channel.id)
                .with_for_update(key_share=True)
            )
        ).all()
    )


def _session_row(
    *,
    channel_id: int,
    key_id: str,
    node: str,
    remote_address: str | None,
    started_at: datetime | None,
    fencing_token: int | None,
) -> PublishSession:
    return PublishSession(
        channel_id=channel_id,
        key_id=key_id[:32],
        node=node[:_NODE_MAX],
        remote_address=_cut(remote_address, _ADDRESS_MAX),
        started_at=started_at or utcnow(),
        media_bytes=0,
        video_frames=0,
        audio_frames=0,
        fencing_token=fencing_token,
    )


async def _insert(session: AsyncSession, row: PublishSession) -> int:
    session.add(row)
    await session.flush()
    session_id = row.id
    session.expunge(row)
    return session_id


def _end_values(
    *,
    reason: str,
    media_bytes: int,
    video_frames: int,
    audio_frames: int,
    video_codec: str | None,
    audio_codec: str | None,
    ended_at: datetime | None,
) -> dict[str, Any]:
    return {
        "ended_at": ended_at or utcnow(),
        "end_reason": reason[:_REASON_MAX],
        "media_bytes": max(0, media_bytes),
        "video_frames": max(0, video_frames),
        "audio_frames": max(0, audio_frames),
        "video_codec": _cut(video_codec, _CODEC_MAX),
        "audio_codec": _cut(audio_codec, _CODEC_MAX),
    }


def _view(row: Row[*tuple[Any, ...]]) -> SessionView:
    return SessionView(
        id=row.id,
        channel_id=row.channel_id,
        key_id=row.key_id,
        node=row.node,
        remote_address=row.remote_address,
        started_at=row.started_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        media_bytes=row.media_bytes,
        video_frames=row.video_frames,
        audio_frames=row.audio_frames,
        video_codec=row.video_codec,
        audio_codec=row.audio_codec,
    )


def _cut(value: str | None, limit: int) -> str | None:
    return None if value is None else value[:limit]


async def live_channel_ids(session: AsyncSession) -> set[int]:
    """Channels with an open publish session, on any node. Read-only."""
    async with session.begin():
        rows = await session.scalars(
            select(PublishSession.channel_id).where(PublishSession.ended_at.is_(None)).distinct()
        )
        return set(rows.all())
