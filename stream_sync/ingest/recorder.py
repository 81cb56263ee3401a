"""What the ingest node writes down about publishes, before it tells anyone.

A publish session row is committed before the bus announces the publish, as the
architecture asks (the database is the truth; the bus is the fast path). A
recorder that cannot write (database down) does not stop the stream: ingest
keeps going and says so in the log.
"""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..audit.refusals import RefusalAggregator
from ..monitor import history
from ..rtmp.counters import MediaCounters

log = logging.getLogger("stream_sync.ingest")


class Recorder(Protocol):
    async def started(self, *, channel_id: int, key_id: str, remote_address: str) -> int | None: ...

    async def ended(
        self,
        session_id: int,
        *,
        reason: str,
        counters: MediaCounters,
        video_codec: str | None,
        audio_codec: str | None,
    ) -> None: ...

    def refused(
        self, *, key_id: str | None, channel_id: int | None, address: str, reason: str
    ) -> None: ...


class DatabaseRecorder:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        node: str,
        refusals: RefusalAggregator,
    ) -> None:
        self._sessions = sessions
        self._node = node
        self._refusals = refusals

    async def started(self, *, channel_id: int, key_id: str, remote_address: str) -> int | None:
        try:
            async with self._sessions() as session:
                return await history.start_session(
                    session,
                    channel_id=channel_id,
                    key_id=key_id,
                    node=self._node,
                    remote_address=remote_address,
                )
        except Exception as exc:
            log.warning("could not record the start of a publish session: %r", exc)
            return None

    async def ended(
        self,
        session_id: int,
        *,
        reason: str,
        counters: MediaCounters,
        video_codec: str | None,
        audio_codec: str | None,
    ) -> None:
        try:
            async with self._sessions() as session:
                await history.end_session(
                    session,
                    session_id=session_id,
                    reason=reason[:128],
                    media_bytes=counters.media_bytes,
                    video_frames=counters.video_frames,
                    audio_frames=counters.audio_frames,
                    video_codec=video_codec,
                    audio_codec=audio_codec,
                )
        except Exception as exc:
            log.warning("could not record the end of publish session %d: %r", session_id, exc)

    def refused(
        self, *, key_id: str | None, channel_id: int | None, address: str, reason: str
    ) -> None:
        self._refusals.note(key_id=key_id, channel_id=channel_id, address=address, reason=reason)
