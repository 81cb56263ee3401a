"""Which channels are live, across every ingest node, as the API sees it.

Fed by the bus (PublishStarted, StreamStats, PublishEnded) and seeded from the
database's open sessions at start, so an API process that starts while streams are
live knows them before their next statistics arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from ..state.interfaces import EventBus, PublishEnded, PublishRefused, PublishStarted, StreamStats
from .context import LiveStream
from .thumbnails import ThumbnailDemand
from .watch import ChannelWatchers

log = logging.getLogger("stream_sync.api")


class BusLiveView:
    def __init__(
        self,
        bus: EventBus,
        default_url: Callable[[], str],
        default_secure_url: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._bus = bus
        self._default_url = default_url
        self._default_secure_url = default_secure_url
        self._streams: dict[int, LiveStream] = {}
        self._started: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.refusals: dict[str, int] = {}  # by reason, since this process started
        self.watchers = ChannelWatchers()  # open dashboards, by channel
        self._demand = ThumbnailDemand(bus, self.watchers.channels)
        self._demand_task: asyncio.Task[None] | None = None

    def seed(self, open_sessions: list[tuple[int, str, int, float]]) -> None:
        """Open sessions from the database: (channel id, key id, session id, started epoch)."""
        for channel_id, key_id, session_id, started in open_sessions:
            self._started[channel_id] = started
            self._streams[channel_id] = LiveStream(
                channel_id, key_id, f"session-{session_id}", "", 0.0, {}, {}, 0
            )

    def start(self) -> None:
        subscription = self._bus.subscribe(stats=True)

        async def follow() -> None:
            try:
                async for event in subscription:
                    self.apply(event)
            finally:
                subscription.close()

        loop = asyncio.get_running_loop()
        self._task = loop.create_task(follow())
        self._demand_task = loop.create_task(self._demand.run())

    async def stop(self) -> None:
        for task in (self._task, self._demand_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def thumbnail_seen(self, channel_id: int) -> None:
        self._demand.seen(channel_id)

    def apply(self, event: object) -> None:
        if isinstance(event, StreamStats):  # every live stream's, every second: first
            self._stats(event)
            return
        now = time.time()
        if isinstance(event, PublishStarted):
            self._started[event.channel_id] = now
            self._streams[event.channel_id] = LiveStream(
                event.channel_id, event.key_id, event.connection_id, event.node, 0.0, {}, {}, 0
            )
        elif isinstance(event, PublishRefused):
            self.refusals[event.reason] = self.refusals.get(event.reason, 0) + 1
        elif isinstance(event, PublishEnded):
            current = self._streams.get(event.channel_id)
            if current is not None and current.connection == event.connection_id:
                del self._streams[event.channel_id]
                self._started.pop(event.channel_id, None)
        self.watchers.dispatch(event)

    def _stats(self, event: StreamStats) -> None:
        current = self._streams.get(event.channel_id)
        if current is None:
            return  # stats racing ahead of PublishStarted, or after PublishEnded
        started = self._started.get(event.channel_id, event.at)
        # The event's containers are its own (made for it, or decoded), never changed
        # afterwards: kept as they are, not copied.
        stream = self._streams[event.channel_id] = LiveStream(
            event.channel_id,
            current.key_id,
            current.connection,
            event.node,
            max(0.0, event.at - started),
            event.codecs or current.codecs,
            event.counters,
            current.bytes_in,
            event.measurements,
            event.health,
            event.at,
            event.thumbnail_at,
            event.outputs,
        )
        self.watchers.dispatch(event, stream.as_dict)

    def live_streams(self) -> dict[int, LiveStream]:
        return dict(self._streams)

    def default_rtmp_url(self) -> str:
        return self._default_url()

    def default_rtmps_url(self) -> str | None:
        return self._default_secure_url()
