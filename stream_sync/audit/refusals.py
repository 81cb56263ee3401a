"""Refused publishes, aggregated: one audit row per key id, address and reason per minute.

An encoder retrying a revoked key every two seconds, or a scanner guessing keys,
must cost the database almost nothing: refusals are counted in memory and written
in the background, one row per minute and combination, with the count.

Rows of a key that belongs to a channel also stage a `PublishRefusalsCounted` in
the outbox, in the same transaction (webhooks' ``publish.refused``): the same
aggregation, so a flood costs one event per minute and combination too. A channel
deleted before the minute is written keeps its row, without the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.engine import OutageLog
from ..db.models import Channel
from ..state import outbox
from ..state.interfaces import PublishRefusalsCounted
from .entries import Actor, AuditAction, add_entry

log = logging.getLogger("stream_sync.audit")
_FAILURES = OutageLog(log, "refused-publish audit")
MAX_BUCKETS = 10_000  # distinct combinations held per process; beyond, they share one row
_Bucket = tuple[int, str | None, int | None, str, str]  # minute, key id, channel, address, reason


class RefusalAggregator:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._counts: dict[_Bucket, int] = {}

    def note(
        self, *, key_id: str | None, channel_id: int | None, address: str, reason: str
    ) -> None:
        minute = int(self._clock() // 60)
        bucket: _Bucket = (minute, key_id, channel_id, address, reason)
        if bucket not in self._counts and len(self._counts) >= MAX_BUCKETS:
            bucket = (minute, None, None, "many", "overflow")
        self._counts[bucket] = self._counts.get(bucket, 0) + 1

    def pending(self) -> int:
        return sum(self._counts.values())

    async def flush(self, *, everything: bool = False) -> int:
        """Write finished minutes (or all of them); returns the rows written."""
        current = int(self._clock() // 60)
        ready = [b for b in self._counts if everything or b[0] < current]
        if not ready:
            return 0
        batch = {bucket: self._counts.pop(bucket) for bucket in ready}
        try:
            async with self._sessions() as session, session.begin():
                known = await _existing_channels(session, {b[2] for b in batch if b[2]})
                for (minute, key_id, refused_on, address, reason), count in batch.items():
                    # A channel deleted meanwhile: its foreign key would fail the row.
                    channel_id = refused_on if refused_on in known else None
                    if channel_id is not None:
                        await outbox.stage(
                            session,
                            PublishRefusalsCounted(
                                channel_id, key_id, address, reason, count, float(minute * 60)
                            ),
                        )
                    add_entry(
                        session,
                        action=AuditAction.PUBLISH_REFUSED,
                        actor=Actor("encoder", None, address),
                        channel_id=channel_id,
                        key_id=key_id,
                        details={"reason": reason},
                        count=count,
                        at=datetime.fromtimestamp(minute * 60, UTC),
                    )
        except Exception:
            for bucket, count in batch.items():  # keep them for the next attempt
                self._counts[bucket] = self._counts.get(bucket, 0) + count
            raise
        return len(batch)

    async def run(self, interval: float = 10.0) -> None:
        """Flush in the background until cancelled, then flush what is left."""
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.flush()
                except Exception as exc:  # the counts are kept for the next round
                    _FAILURES.failed(exc)
        finally:
            with contextlib.suppress(Exception):
                await self.flush(everything=True)


async def _existing_channels(session: AsyncSession, channel_ids: set[int]) -> set[int]:
    if not channel_ids:
        return set()
    rows = await session.scalars(select(Channel.id).where(Channel.id.in_(channel_ids)))
    return set(rows.all())
