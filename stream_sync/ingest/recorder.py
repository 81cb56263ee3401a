"""What the ingest node writes down about publishes, before it tells anyone.

A publish session row and its PublishStarted event are committed to the database
(the outbox) in one transaction before the bus announces them, as the architecture
asks: the database is the truth, the bus the fast path. A recorder that cannot write
(database down) does not stop the stream: ingest keeps going, says so in the log, and
announces the event without a session id.
"""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..audit.refusals import RefusalAggregator
from ..monitor import history
from ..state.interfaces import PublishEnded, PublishStarted

log = logging.getLogger("stream_sync.ingest")


class Recorder(Protocol):
    async def started(
        self, event: PublishStarted, *, remote_address: str, fencing_token: int
    ) -> PublishStarted:
        """The event as committed (with session id and sequence number)."""

    async def ended(self, event: PublishEnded) -> PublishEnded: ...

    def refused(
        self, *, key_id: str | None, channel_id: int | None, address: str, reason: str
    ) -> None: ...


class DatabaseRecorder:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, refusals: RefusalAggregator
    ) -> None:
        self._sessions = sessions
        self._refusals = refusals

    async def started(
        self, event: PublishStarted, *, remote_address: str, fencing_token: int
    ) -> PublishStarted:
        try:
            async with self._sessions() as session:
                return await history.record_publish_started(
                    session, event=event, remote_address=remote_address, fencing_token=fencing_token
                )
        except Exception as exc:
            log.warning("could not record the start of a publish session: %r", exc)
            return event

    async def ended(self, event: PublishEnded) -> PublishEnded:
        try:
            async with self._sessions() as session:
                recorded = await history.record_publish_ended(session, event=event)
        except Exception as exc:
            log.warning("could not record the end of publish session %s: %r", event.session_id, exc)
            return event
        return event if recorded is None else recorded

    def refused(
        self, *, key_id: str | None, channel_id: int | None, address: str, reason: str
    ) -> None:
        self._refusals.note(key_id=key_id, channel_id=channel_id, address=address, reason=reason)
