"""What the ingest node writes down about publishes, before it tells anyone.

Every transition of the channel's status (monitor/lifecycle.py) commits its session
row and its events to the database (the outbox) before the bus announces them: the
database is the truth, the bus the fast path. A recorder that cannot write (database
down) does not stop the stream: ingest keeps going, says so in the log, and writes
the publish's changes, in order, once the database is back (RETRY_FIRST).

Starts and ends that come together (a reconnect storm, the end of a node) are
written together, one transaction for many channels: a transaction per publish
cost more than the media of its first seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..audit.refusals import RefusalAggregator
from ..credentials.errors import ChannelNotFound
from ..db.engine import unreachable
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
# While the database is out of reach, the write of a publish's start, media change
# or end waits for it (RETRY_FIRST seconds, doubling to RETRY_MAX): given up at once,
# a publish that ended during a database restart left its session open, and "live",
# for good, and one that started had none (the fault tests). The encoder never waits:
# these writes run in the connection's journal. Once the node stops, a write is tried
# once more and then given up: the monitor hands a stopped node's sessions over.
RETRY_FIRST = 0.5
RETRY_MAX = 5.0
# A start that comes within this long of the one before is written this long later,
# with the others of that moment (a lone start goes at once): a storm spread over
# seconds (200 encoders reconnecting over 2 s) otherwise cost a transaction per
# publisher, as many as its admissions. The encoder heard Publish.Start already; in a
# storm, dashboards hear "live" 0.1 s later.
START_LINGER = 0.1


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
        self._starts = Coalescer(self._start_many, linger=START_LINGER)
        self._ends = Coalescer(self._end_many)
        self._stopping = asyncio.Event()

    def stop_waiting(self) -> None:
        """The node is stopping: writes waiting for the database try once more, then give up."""
        self._stopping.set()

    async def _written(self, write: Callable[[], Awaitable[R]], what: str) -> R:
        """`write()`, again and again while the database is out of reach (see RETRY_FIRST)."""
        delay = RETRY_FIRST
        waiting = False
        while True:
            try:
                return await write()
            except Exception as exc:
                if self._stopping.is_set() or not unreachable(exc):
                    raise
                if not waiting:
                    log.warning("%s waits for the database (%s)", what, type(exc).__name__)
                    waiting = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, RETRY_MAX)

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
            staged, outcome, grace = _or_raise(
                await self._written(lambda: self._starts(start), "the start of a publish")
            )
        except Exception as exc:
            log.warning("could not record the start of a publish: %r", exc)
            return event, [], self._default_grace
        return staged, outcome.status_events, grace

    async def ended(
        self, event: PublishEnded, *, kind: EndKind, grace: float, summary: lifecycle.Summary
    ) -> tuple[PublishEnded, list[StatusChanged]]:
        end = lifecycle.End(event, kind, grace, summary)
        try:
            staged, outcome = _or_raise(
                await self._written(lambda: self._ends(end), "the end of a publish")
            )
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

        async def change() -> lifecycle.Outcome:
            async with self._writes:
                if flowing:
                    return await lifecycle.media_flowing(
                        sessions, channel_id=channel_id, now=time.time(), node=node, token=token
                    )
                return await lifecycle.media_stalled(
                    sessions,
                    channel_id=channel_id,
                    now=time.time(),
                    grace=grace,
                    node=node,
                    token=token,
                )

        try:
            outcome = await self._written(change, f"a media change of channel {channel_id}")
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
