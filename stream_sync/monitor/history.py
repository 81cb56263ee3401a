"""Publish sessions: one row from an accepted publish until the encoder goes away.

The ingest node writes a row when a publish is accepted and completes it when the
publish ends. A node that crashed leaves rows open; it closes its own on the next
start (``close_open_sessions``). Same transaction rules as the credential
service: pass an idle session, writers commit. Telemetry, not administration:
nothing here is audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, Row, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync.credentials.errors import ChannelNotFound
from stream_sync.db.models import PublishSession, utcnow

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


async def start_session(
    session: AsyncSession,
    *,
    channel_id: int,
    key_id: str,
    node: str,
    remote_address: str | None,
    started_at: datetime | None = None,
) -> int:
    """Record an accepted publish; the new session's id. Commits."""
    row = PublishSession(
        channel_id=channel_id,
        key_id=key_id[:32],
        node=node[:_NODE_MAX],
        remote_address=_cut(remote_address, _ADDRESS_MAX),
        started_at=started_at or utcnow(),
        media_bytes=0,
        video_frames=0,
        audio_frames=0,
    )
    try:
        async with session.begin():
            session.add(row)
            await session.flush()
            session_id = row.id
            session.expunge(row)
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
    """Complete a session with its totals. Commits.

    Only an open session is completed: ending twice, or ending a row that
    ``close_open_sessions`` or a channel deletion got to first, changes nothing.
    """
    async with session.begin():
        await session.execute(
            update(PublishSession)
            .where(PublishSession.id == session_id, PublishSession.ended_at.is_(None))
            .values(
                ended_at=ended_at or utcnow(),
                end_reason=reason[:_REASON_MAX],
                media_bytes=max(0, media_bytes),
                video_frames=max(0, video_frames),
                audio_frames=max(0, audio_frames),
                video_codec=_cut(video_codec, _CODEC_MAX),
                audio_codec=_cut(audio_codec, _CODEC_MAX),
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
) -> int:
    """Close the sessions this node left open (it crashed); how many. Commits.

    Call it on start, before accepting publishers. Totals stay as last written.
    """
    async with session.begin():
        result = await session.execute(
            update(PublishSession)
            .where(PublishSession.node == node[:_NODE_MAX], PublishSession.ended_at.is_(None))
            .values(ended_at=ended_at or utcnow(), end_reason=reason[:_REASON_MAX])
            .execution_options(synchronize_session=False)
        )
    return _rowcount(result)


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


def _rowcount(result: Any) -> int:
    count = result.rowcount if isinstance(result, CursorResult) else 0
    return max(0, int(count))
