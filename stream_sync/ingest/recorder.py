"""What the ingest node writes down about publishes, before it tells anyone.

Every transition of the channel's status (monitor/lifecycle.py) commits its session
row and its events to the database (the outbox) before the bus announces them: the
database is the truth, the bus the fast path. A recorder that cannot write (database
down) does not stop the stream: ingest keeps going, says so in the log, and
announces what it can.

Starts and ends that come together (a reconnect storm, the end of a node) are
written together, one transaction for many channels: a transaction per publish
cost more than the media of its first seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..audit.refusals import RefusalAggregator
from ..credentials.errors import ChannelNotFound
from ..monitor import lifecycle
from ..monitor.status import EndKind
from ..state.coalesce import Coalescer
from ..state.interfaces import PublishEnded, PublishStarted, StatusChanged

log = logging.getLogger("stream_sync.ingest")
# Transactions in flight at once. More would not commit sooner (they share one
# process's CPU) but would take the database connections and event loop turns that
# admissions need: in a storm, encoders hear Publish.Start first and the session
# rows follow.
CONCURRENT_WRITES = 3


class Recorder(Protocol):
    async def started(
        self,
        event: PublishStarted,
        *,
        remote_address: str,
        fencing_token: int,
        test: bool,
        media: bool = False,
    ) -> tuple[PublishStarted, list[StatusChanged], float]:
        """The event as committed (session id, sequence number), status events, grace.

        ``media``: media flows already, so the same transaction records that too.
        """

    async def ended(
        self, event: PublishEnded, *, kind: EndKind, grace: float, summary: lifecycle.Summary
    ) -> tuple[PublishEnded, list[StatusChanged]]: ...

    async def media(
        self, channel_id: int, *, flowing: bool, grace: float, node: str, token: int | None = None
    ) -> list[StatusChanged]:
        """Media started or stopped flowing; `token`: the publish's fencing token."""

    async def summaries(self, summaries: Mapping[int, lifecycle.Summary]) -> None:
        """Running summaries of live sessions, by session id."""

    def refused(
        self, *, key_id: str | None, channel_id: int | None, address: str, reason: str
    ) -> None: ...


class DatabaseRecorder:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        refusals: RefusalAggregator,
        default_grace: float,
    ) -> None:
        self._sessions = sessions
        self._refusals = refusals
        self._default_grace = default_grace
        self._writes = asyncio.Semaphore(CONCURRENT_WRITES)
        self._starts = Coalescer(self._start_many)
        self._ends = Coalescer(self._end_many)

    async def started(
        self,
        event: PublishStarted,
        *,
        remote_address: str,
        fencing_token: int,
        test: bool,
        media: bool = False,
    ) -> tuple[PublishStarted, list[StatusChanged], float]:
        start = lifecycle.Start(event, remote_address, fencing_token, test, media)
        try:
            staged, outcome, grace = _or_raise(await self._starts(start))
        except Exception as exc:
            log.warning("could not record the start of a publish: %r", exc)
            return event, [], self._default_grace
        return staged, outcome.status_events, grace

    async def ended(
        self, event: PublishEnded, *, kind: EndKind, grace: float, summary: lifecycle.Summary
    ) -> tuple[PublishEnded, list[StatusChanged]]:
        end = lifecycle.End(event, kind, grace, summary)
        try:
            staged, outcome = _or_raise(await self._ends(end))
        except Exception as exc:
            log.warning("could not record the end of a publish: %r", exc)
            return event, []
        return staged, outcome.status_events

    async def _start_many(
        self, starts: Sequence[lifecycle.Start]
    ) -> list[lifecycle.StartRecord | ChannelNotFound]:
        async with self._writes:
            return await lifecycle.publish_started_many(
                self._sessions, starts, default_grace=self._default_grace, now=time.time()
            )

    async def _end_many(
        self, ends: Sequence[lifecycle.End]
    ) -> list[lifecycle.EndRecord | ChannelNotFound]:
        async with self._writes:
            return await lifecycle.publish_ended_many(self._sessions, ends, now=time.time())

    async def media(
        self, channel_id: int, *, flowing: bool, grace: float, node: str, token: int | None = None
    ) -> list[StatusChanged]:
        sessions = self._sessions
        try:
            async with self._writes:
                if flowing:
                    outcome = await lifecycle.media_flowing(
                        sessions, channel_id=channel_id, now=time.time(), node=node, token=token
                    )
                else:
                    outcome = await lifecycle.media_stalled(
                        sessions,
                        channel_id=channel_id,
                        now=time.time(),
                        grace=grace,
                        node=node,
                        token=token,
                    )
        except Exception as exc:
            log.warning("could not record a media change of channel %d: %r", channel_id, exc)
            return []
        return outcome.status_events

    async def summaries(self, summaries: Mapping[int, lifecycle.Summary]) -> None:
        try:
            async with self._writes:
                await lifecycle.update_summaries(self._sessions, summaries, now=time.time())
        except Exception as exc:
            log.warning("could not update %d live sessions: %r", len(summaries), exc)

    def refused(
        self, *, key_id: str | None, channel_id: int | None, address: str, reason: str
    ) -> None:
        self._refusals.note(key_id=key_id, channel_id=channel_id, address=address, reason=reason)


R = TypeVar("R")


def _or_raise(record: R | ChannelNotFound) -> R:
    if isinstance(record, ChannelNotFound):
        raise record
    return record
