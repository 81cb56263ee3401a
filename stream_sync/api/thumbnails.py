"""Whose live pictures someone is looking at, told to the ingest nodes.

Every live stream gets a new picture every `thumbnail_interval` seconds, looked at
or not; a channel on screen gets one every few seconds. On screen means its page's
WebSocket is open, or its picture was fetched within HOLD seconds (the admin
overview refreshes its pictures). The set goes out on the bus (ThumbnailsWanted)
at once when it grows and every REPEAT seconds while it is not empty; a node
forgets a channel REPEAT * 3 seconds after it last heard it, so a closed page costs
nothing for long, and a lost event or an API restart costs one slow picture at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from ..state.errors import StateUnavailable
from ..state.interfaces import EventBus, ThumbnailsWanted

log = logging.getLogger("stream_sync.api")

HOLD = 10.0
REPEAT = 2.0


class ThumbnailDemand:
    def __init__(
        self,
        bus: EventBus,
        watched: Callable[[], Iterable[int]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self._watched = watched  # channels whose page's WebSocket is open
        self._clock = clock
        self._fetched: dict[int, float] = {}  # channel id -> wanted until (epoch seconds)
        self._grew = asyncio.Event()
        self._sent: frozenset[int] = frozenset()

    def seen(self, channel_id: int) -> None:
        """Someone looks at the channel's picture (a page opened, a picture fetched)."""
        self._fetched[channel_id] = self._clock() + HOLD
        if channel_id not in self._sent:
            self._grew.set()

    def wanted(self) -> list[int]:
        now = self._clock()
        for channel_id in [c for c, until in self._fetched.items() if until <= now]:
            del self._fetched[channel_id]
        return sorted({*self._fetched, *self._watched()})

    async def run(self) -> None:
        """Until cancelled: the wanted set on the bus, at once when it grows, then repeated."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._grew.wait(), REPEAT)
            self._grew.clear()
            await self.send()

    async def send(self) -> None:
        wanted = self.wanted()
        self._sent = frozenset(wanted)
        if not wanted:
            return
        # Redis down: pictures come at the slow pace until it is back.
        with contextlib.suppress(StateUnavailable):
            await self._bus.publish(ThumbnailsWanted(wanted, self._clock() + REPEAT * 3))
