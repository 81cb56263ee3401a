"""The in-process engine: the embedded default for a single `stream-sync serve`."""

from __future__ import annotations

import asyncio
import itertools
import logging

from .interfaces import BusEvent, Lease

log = logging.getLogger(__name__)


class InProcessLocks:
    def __init__(self) -> None:
        self._held: dict[int, Lease] = {}
        self._tokens = itertools.count(1)

    async def acquire(self, channel_id: int, owner: str) -> Lease | None:
        current = self._held.get(channel_id)
        if current is not None and current.owner != owner:
            return None
        lease = Lease(channel_id, owner, next(self._tokens))
        self._held[channel_id] = lease
        return lease

    async def release(self, lease: Lease) -> None:
        if self._held.get(lease.channel_id) == lease:
            del self._held[lease.channel_id]

    async def holder(self, channel_id: int) -> Lease | None:
        return self._held.get(channel_id)


class InProcessSubscription:
    def __init__(self, queues: set[asyncio.Queue[BusEvent]], size: int) -> None:
        self._queues = queues
        self._queue: asyncio.Queue[BusEvent] = asyncio.Queue(size)
        queues.add(self._queue)  # registered now, so nothing published after subscribe() is missed

    def __aiter__(self) -> InProcessSubscription:
        return self

    async def __anext__(self) -> BusEvent:
        return await self._queue.get()

    def close(self) -> None:
        self._queues.discard(self._queue)


class InProcessBus:
    """Fan-out to every subscriber; a subscriber that falls far behind loses old events."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._queues: set[asyncio.Queue[BusEvent]] = set()
        self._queue_size = queue_size

    async def publish(self, event: BusEvent) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
                log.warning("event bus subscriber is %d events behind; dropped one", queue.maxsize)
            queue.put_nowait(event)

    def subscribe(self) -> InProcessSubscription:
        return InProcessSubscription(self._queues, self._queue_size)
