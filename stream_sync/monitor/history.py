"""Reading session history: one row per session, from its first publish to offline.

Sessions are written by monitor/lifecycle.py, which applies the status machine;
this module only reads them. Read-only functions run their own short transaction
(pass an idle session).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync.db.models import Channel, PublishSession

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class SessionView:
    id: int
    channel_id: int
    key_id: str
    node: str
    remote_address: str | None
    started_at: datetime
    ended_at: datetime | None  # None while the session is open
    end_reason: str | None
    media_bytes: int
    video_frames: int
    audio_frames: int
    video_codec: str | None
    audio_codec: str | None
    status: str
    test: bool
    grace_until: float | None
    status_since: float
    publishes: int
    encoder: str | None
    width: int | None
    height: int | None
    fps: float | None
    avg_kbps: float | None
    peak_kbps: float | None
    health_issues: list[str]
    last_update_at: datetime | None


async def list_sessions(
    session: AsyncSession, *, channel_id: int, limit: int = 50, before_id: int | None = None
) -> list[SessionView]:
    """A channel's sessions, newest first; page with ``before_id``."""
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


async def open_session(session: AsyncSession, *, channel_id: int) -> SessionView | None:
    """The channel's open session (live, reconnecting, or waiting for media), if any."""
    query = select(PublishSession.__table__).where(
        PublishSession.channel_id == channel_id, PublishSession.ended_at.is_(None)
    )
    async with session.begin():
        row = (await session.execute(query)).one_or_none()
    return None if row is None else _view(row)


async def current_status(
    session: AsyncSession, *, channel_id: int
) -> tuple[SessionView | None, int]:
    """The open session and the channel's last event seq, read together.

    A dashboard starts from this and then applies only status events of a higher
    seq, so an event that raced the read is neither lost nor applied twice.
    """
    query = select(PublishSession.__table__).where(
        PublishSession.channel_id == channel_id, PublishSession.ended_at.is_(None)
    )
    async with session.begin():
        row = (await session.execute(query)).one_or_none()
        seq = await session.scalar(select(Channel.event_seq).where(Channel.id == channel_id))
    return (None if row is None else _view(row)), int(seq or 0)


async def open_sessions(session: AsyncSession) -> list[SessionView]:
    """Every open session, on any node."""
    query = select(PublishSession.__table__).where(PublishSession.ended_at.is_(None))
    async with session.begin():
        rows = (await session.execute(query)).all()
    return [_view(row) for row in rows]


async def live_channel_ids(session: AsyncSession) -> set[int]:
    """Channels with an open session, on any node."""
    async with session.begin():
        rows = await session.scalars(
            select(PublishSession.channel_id).where(PublishSession.ended_at.is_(None)).distinct()
        )
        return set(rows.all())


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
        status=row.status,
        test=row.test,
        grace_until=row.grace_until,
        status_since=row.status_since,
        publishes=row.publishes,
        encoder=row.encoder,
        width=row.width,
        height=row.height,
        fps=row.fps,
        avg_kbps=row.avg_kbps,
        peak_kbps=row.peak_kbps,
        health_issues=list(row.health_issues or []),
        last_update_at=row.last_update_at,
    )
