"""A node's care of its own recordings: parts a crash left open, and expired ones.

Each ingest node looks after the files on its own disk and the rows that name it
(``node``), so nodes need no shared storage. Files are touched in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync.db.models import utcnow

from . import files, flv, rows
from .rows import PartEnd, PartRow, RecordingStatus

log = logging.getLogger("stream_sync.recording")

BATCH = 500
LEFT_OPEN = "the node stopped while recording"


async def recover(sessions: async_sessionmaker[AsyncSession], folder: Path, node: str) -> int:
    """Close the parts this node left open (it was killed): files trimmed to their last
    whole tag with their duration patched in, rows complete (or failed: no file, nothing
    in it). Run before this node records again. How many."""
    async with sessions() as session:
        left = await rows.unfinished(session, node=node)
    for info in left:
        status, reason, size, duration, ended = RecordingStatus.FAILED, LEFT_OPEN, 0, 0, utcnow()
        try:
            path = files.resolve(folder, info.path)
            repaired = await asyncio.to_thread(flv.repair, path)
            size, duration = repaired.size, repaired.duration_ms
            ended = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            if repaired.media_tags:
                status = RecordingStatus.COMPLETE
            else:
                reason = "nothing was recorded"
        except FileNotFoundError:
            reason = "the file is missing"
        except (OSError, files.UnsafePath) as exc:
            reason = f"the file is unreadable ({type(exc).__name__})"
        log.info(
            "recording %d (%s) left open: closed as %s, %s", info.id, info.path, status, reason
        )
        part = PartRow(info.channel_id, node, info.path, info.part, info.started_at, None)
        end = PartEnd(status, ended, size, duration, reason, info.session_id)
        async with sessions() as session:
            await rows.finish_part(session, recording_id=info.id, part=part, end=end)
    return len(left)


@dataclass(frozen=True, slots=True)
class Purged:
    rows: int
    files: int


async def purge(
    sessions: async_sessionmaker[AsyncSession],
    folder: Path,
    node: str,
    *,
    days: int,
    writing: Collection[str] = (),
    now: datetime | None = None,
) -> Purged:
    """Delete this node's recordings started more than ``days`` ago (0 keeps them), and
    any file in the folder last written before then, row or not (``writing``: open now)."""
    if days <= 0:
        return Purged(0, 0)
    cutoff = (now or utcnow()) - timedelta(days=days)
    deleted_rows = deleted_files = 0
    while True:
        async with sessions() as session:
            batch = await rows.expired(session, node=node, before=cutoff, limit=BATCH)
        for info in batch:
            with contextlib.suppress(files.UnsafePath):
                deleted_files += await asyncio.to_thread(files.delete, folder, info.path)
        async with sessions() as session:
            deleted_rows += await rows.delete_rows(session, [info.id for info in batch])
        if len(batch) < BATCH:
            break
    deleted_files += await asyncio.to_thread(
        files.delete_older, folder, cutoff.timestamp(), frozenset(writing)
    )
    return Purged(deleted_rows, deleted_files)
