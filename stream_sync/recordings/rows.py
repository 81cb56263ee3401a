"""The ``recordings`` rows: one per file (a part of a session), written by the node
that records it, read and deleted through the API.

Same transaction rules as ``credentials.service``: pass an idle session; each
function owns its transaction, and a deletion commits with its audit row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CursorResult, Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.db.models import Recording

from .errors import RecordingInProgress, RecordingNotFound

MAX_PAGE = 200
REASON_MAX = 128


class RecordingStatus(StrEnum):
    RECORDING = "recording"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    id: int
    channel_id: int
    session_id: int | None
    node: str
    path: str  # relative to the node's recordings folder
    part: int
    status: str
    started_at: datetime
    ended_at: datetime | None
    bytes: int
    duration_ms: int
    end_reason: str | None


@dataclass(frozen=True, slots=True)
class PartRow:
    """What the writer knows of a part when it starts."""

    channel_id: int
    node: str
    path: str
    part: int
    started_at: datetime
    session_id: int | None


@dataclass(frozen=True, slots=True)
class PartEnd:
    status: RecordingStatus
    ended_at: datetime
    size: int
    duration_ms: int
    reason: str
    session_id: int | None


async def start_part(session: AsyncSession, *, part: PartRow) -> int:
    """The part's row, status recording; its id. Commits."""
    async with session.begin():
        result = await session.execute(
            insert(Recording)
            .values(
                channel_id=part.channel_id,
                node=part.node,
                path=part.path,
                part=part.part,
                session_id=part.session_id,
                status=RecordingStatus.RECORDING,
                started_at=part.started_at,
                bytes=0,
                duration_ms=0,
            )
            .returning(Recording.id)
        )
        return int(result.scalar_one())


async def finish_part(
    session: AsyncSession, *, recording_id: int | None, part: PartRow, end: PartEnd
) -> None:
    """The part is over: its status, size and duration. Commits.

    Without an id (its start was never written: the database was away) the whole
    row is written now. A row deleted meanwhile stays deleted.
    """
    values = {
        "status": end.status,
        "ended_at": end.ended_at,
        "bytes": end.size,
        "duration_ms": end.duration_ms,
        "end_reason": end.reason[:REASON_MAX],
    }
    async with session.begin():
        if recording_id is None:
            await session.execute(
                insert(Recording).values(
                    channel_id=part.channel_id,
                    node=part.node,
                    path=part.path,
                    part=part.part,
                    session_id=end.session_id,
                    started_at=part.started_at,
                    **values,
                )
            )
            return
        if end.session_id is not None:
            values["session_id"] = end.session_id
        await session.execute(
            update(Recording)
            .where(Recording.id == recording_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


async def list_recordings(
    session: AsyncSession, *, channel_id: int, limit: int = 50, before_id: int | None = None
) -> list[RecordingInfo]:
    """A channel's recordings, newest first; page with ``before_id``. Read-only."""
    query = (
        select(Recording.__table__)
        .where(Recording.channel_id == channel_id)
        .order_by(Recording.id.desc())
        .limit(max(1, min(limit, MAX_PAGE)))
    )
    if before_id is not None:
        query = query.where(Recording.id < before_id)
    async with session.begin():
        rows = (await session.execute(query)).all()
    return [_info(row) for row in rows]


async def get_recording(
    session: AsyncSession, *, channel_id: int, recording_id: int
) -> RecordingInfo:
    """One of the channel's recordings; RecordingNotFound for anything else. Read-only."""
    async with session.begin():
        row = (
            await session.execute(
                select(Recording.__table__).where(
                    Recording.id == recording_id, Recording.channel_id == channel_id
                )
            )
        ).one_or_none()
    if row is None:
        raise RecordingNotFound(f"this channel has no recording with id {recording_id}")
    return _info(row)


async def delete_recording(
    session: AsyncSession, *, channel_id: int, recording_id: int, actor: audit.Actor
) -> RecordingInfo:
    """Delete the row with its audit row (the caller deletes the file). Commits.

    A part still being written is refused: its node would go on writing it.
    """
    async with session.begin():
        row = (
            await session.execute(
                select(Recording.__table__)
                .where(Recording.id == recording_id, Recording.channel_id == channel_id)
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            raise RecordingNotFound(f"this channel has no recording with id {recording_id}")
        info = _info(row)
        if info.status == RecordingStatus.RECORDING:
            raise RecordingInProgress(
                "this recording is still being written: turn Record off or end the stream first"
            )
        audit.add_entry(
            session,
            action=audit.AuditAction.RECORDING_DELETED,
            actor=actor,
            channel_id=channel_id,
            details={
                "recording_id": info.id,
                "session_id": info.session_id,
                "part": info.part,
                "node": info.node,
                "bytes": info.bytes,
                "started_at": info.started_at.isoformat(),
            },
        )
        await session.execute(
            delete(Recording)
            .where(Recording.id == recording_id)
            .execution_options(synchronize_session=False)
        )
    return info


async def unfinished(session: AsyncSession, *, node: str) -> list[RecordingInfo]:
    """The node's parts still marked as being written. Read-only."""
    async with session.begin():
        rows = (
            await session.execute(
                select(Recording.__table__)
                .where(Recording.node == node, Recording.status == RecordingStatus.RECORDING)
                .order_by(Recording.id)
            )
        ).all()
    return [_info(row) for row in rows]


async def expired(
    session: AsyncSession, *, node: str, before: datetime, limit: int = 1000
) -> list[RecordingInfo]:
    """The node's finished parts started before ``before``, oldest first. Read-only."""
    async with session.begin():
        rows = (
            await session.execute(
                select(Recording.__table__)
                .where(
                    Recording.node == node,
                    Recording.status != RecordingStatus.RECORDING,
                    Recording.started_at < before,
                )
                .order_by(Recording.id)
                .limit(limit)
            )
        ).all()
    return [_info(row) for row in rows]


async def delete_rows(session: AsyncSession, ids: Sequence[int]) -> int:
    """Delete rows by id (retention: their files are gone). Commits; how many."""
    if not ids:
        return 0
    async with session.begin():
        result = await session.execute(
            delete(Recording)
            .where(Recording.id.in_(list(ids)))
            .execution_options(synchronize_session=False)
        )
    return result.rowcount if isinstance(result, CursorResult) else 0


def _info(row: Row[*tuple[Any, ...]]) -> RecordingInfo:
    return RecordingInfo(
        id=row.id,
        channel_id=row.channel_id,
        session_id=row.session_id,
        node=row.node,
        path=row.path,
        part=row.part,
        status=row.status,
        started_at=row.started_at,
        ended_at=row.ended_at,
        bytes=row.bytes,
        duration_ms=row.duration_ms,
        end_reason=row.end_reason,
    )
