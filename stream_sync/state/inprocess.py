"""The in-process engine: the embedded default for a single `stream-sync serve`.

Everything lives in this process's memory and expires on an injectable clock, so
tests move time instead of sleeping. The fan-out and the helpers at the top are
shared with the Redis engine, which delivers what its Pub/Sub reader hears through
the same bounded queues.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence

from .interfaces import (
    BusEvent,
    CachedKey,
    KeyState,
    Lease,
    NodeInfo,
    StreamStats,
    Thumbnail,
)

log = logging.getLogger(__name__)

Clock = Callable[[], float]

DEFAULT_LOCK_TTL = 10.0
DEFAULT_QUEUE_SIZE = 1024
DEFAULT_CACHE_ENTRIES = 100_000


def check_ttl(ttl: float) -> None:
    """A TTL of zero would store something already gone (and Redis refuses PX 0)."""
    if not ttl > 0 or math.isinf(ttl):
        raise ValueError("a TTL is a positive, finite number of seconds")


def check_successor(stale: Lease, token: int) -> None:
    """Fencing only works if a takeover never hands out a smaller token."""
    if token <= stale.token:
        raise ValueError("a takeover needs a token larger than the stale lease's")


class LogThrottle:
    """At most one line per interval for a problem that repeats; the rest are counted."""

    def __init__(self, interval: float = 60.0, clock: Clock = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._next = -math.inf
        self._suppressed = 0

    def log(self, logger: logging.Logger, level: int, message: str, *args: object) -> None:
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            message += " (%d more since the last report)"
            args = (*args, self._suppressed)
        logger.log(level, message, *args)
        self._next = now + self._interval
        self._suppressed = 0


class RefusalLog:
    """Refusals counted by reason for the metrics, each reason logged apart and throttled.

    A flood of one kind must not hide the first line of another.
    """

    def __init__(self, logger: logging.Logger, interval: float, clock: Clock) -> None:
        self.counts: Counter[str] = Counter()
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._throttles: dict[str, LogThrottle] = {}

    def note(self, reason: str, message: str, *args: object) -> None:
        self.counts[reason] += 1
        throttle = self._throttles.get(reason)
        if throttle is None:
            throttle = self._throttles[reason] = LogThrottle(self._interval, self._clock)
        throttle.log(self._logger, logging.WARNING, message, *args)


# --- Events ----------------------------------------------------------------------------------


class InProcessSubscription:
    """One subscriber's bounded queue; iteration ends once it (or its bus) is closed.

    A plain deque and one wake-up per delivery, not an asyncio.Queue: a second's
    statistics of every live stream arrive together, and a queue's get and put per
    event had cost the monitor more than decoding them.
    """

    def __init__(self, fanout: FanOut, size: int, *, stats: bool = False) -> None:
        self._fanout = fanout
        self.stats = stats  # whether StreamStats reach this subscriber
        self._size = size
        self._events: deque[BusEvent] = deque()
        self._arrived = asyncio.Event()
        self._closed = False

    def __aiter__(self) -> InProcessSubscription:
        return self

    async def __anext__(self) -> BusEvent:
        while not self._events and not self._closed:
            self._arrived.clear()
            await self._arrived.wait()
        if self._closed:
            raise StopAsyncIteration
        return self._events.popleft()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fanout.discard(self)
        self._events.clear()
        self._arrived.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, events: Sequence[BusEvent]) -> int:
        """Queue events in order; how many of the oldest queued ones made room for them."""
        queued = self._events
        queued.extend(events)
        dropped = len(queued) - self._size
        for _ in range(dropped):
            queued.popleft()
        self._arrived.set()
        return max(0, dropped)


class FanOut:
    """Every event to every subscriber; one that falls far behind loses its oldest events.

    Dropping beats blocking: a stuck consumer must not stall ingest or the bus reader.
    """

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscriptions: set[InProcessSubscription] = set()
        self._closed = False
        self._drops = LogThrottle()

    def subscribe(self, *, stats: bool = False) -> InProcessSubscription:
        subscription = InProcessSubscription(self, self._queue_size, stats=stats)
        if self._closed:
            subscription.close()
        else:  # registered now, so nothing delivered after subscribe() is missed
            self._subscriptions.add(subscription)
        return subscription

    @property
    def wants_stats(self) -> bool:
        return any(subscription.stats for subscription in self._subscriptions)

    def deliver(self, event: BusEvent) -> None:
        self._deliver((event,), stats=isinstance(event, StreamStats))

    def deliver_stats(self, batch: Sequence[StreamStats]) -> None:
        """A node's statistics of one round: queued together, each subscriber woken once."""
        if batch:
            self._deliver(batch, stats=True)

    def _deliver(self, events: Sequence[BusEvent], *, stats: bool) -> None:
        for subscription in list(self._subscriptions):
            if stats and not subscription.stats:
                continue
            if subscription.offer(events):
                self._drops.log(
                    log,
                    logging.WARNING,
                    "event bus subscriber is %d events behind; dropped its oldest events",
                    self._queue_size,
                )

    def discard(self, subscription: InProcessSubscription) -> None:
        self._subscriptions.discard(subscription)

    def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.close()

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)


class InProcessBus:
    """The event bus of a single process: a fan-out, nothing crosses the process."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._fanout = FanOut(queue_size)

    async def publish(self, event: BusEvent) -> None:
        self._fanout.deliver(event)

    async def publish_stats(self, batch: Sequence[StreamStats]) -> None:
        self._fanout.deliver_stats(batch)

    def subscribe(self, *, stats: bool = False) -> InProcessSubscription:
        return self._fanout.subscribe(stats=stats)

    def close(self) -> None:
        """End every subscription's iteration; later subscriptions end at once."""
        self._fanout.close()


# --- Key cache -------------------------------------------------------------------------------


class InProcessKeyCache:
    """Cache-aside entries with a TTL each, bounded so a flood of key ids can't grow it.

    When full, expired entries go first, then the oldest written ones (which are
    the first to expire anyway when TTLs are alike).
    """

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._wall = wall
        self._max = max_entries
        self._entries: dict[str, tuple[float, CachedKey]] = {}  # key id -> (expires, entry)

    async def get(self, key_id: str) -> CachedKey | None:
        return self._live(key_id)

    async def fill(self, entry: CachedKey, ttl: float) -> bool:
        check_ttl(ttl)
        if self._live(entry.key_id) is not None:
            return False
        self._store(entry, ttl)
        return True

    async def replace(self, entry: CachedKey, ttl: float) -> None:
        """Refresh an entry, but never turn a tombstone back into a valid key."""
        check_ttl(ttl)
        current = self._live(entry.key_id)
        revoked = current is not None and current.state is KeyState.REVOKED
        if revoked and entry.state is not KeyState.REVOKED:
            return
        self._store(entry, ttl)

    async def tombstone(self, key_id: str, ttl: float, channel_id: int | None = None) -> None:
        check_ttl(ttl)
        entry = CachedKey(
            key_id, KeyState.REVOKED, channel_id=channel_id, fresh_until=self._wall() + ttl
        )
        self._store(entry, ttl)

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key_id: str) -> CachedKey | None:
        found = self._entries.get(key_id)
        if found is None:
            return None
        expires, entry = found
        if expires <= self._clock():
            del self._entries[key_id]
            return None
        return entry

    def _store(self, entry: CachedKey, ttl: float) -> None:
        self._entries.pop(entry.key_id, None)  # re-inserted at the end: newest
        if len(self._entries) >= self._max:
            self._make_room()
        self._entries[entry.key_id] = (self._clock() + ttl, entry)

    def _make_room(self) -> None:
        """Purge expired entries; if that frees too little, evict down to 90% by age.

        Freeing a tenth at a time makes the full scan rare instead of once per insert.
        """
        now = self._clock()
        for key_id in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key_id]
        target = self._max - max(1, self._max // 10)
        if len(self._entries) > target:
            excess = len(self._entries) - target
            for key_id in list(itertools.islice(self._entries, excess)):
                del self._entries[key_id]


# --- Publish locks ---------------------------------------------------------------------------


class InProcessLocks:
    """One lease per channel with a TTL; every change compares the exact token."""

    def __init__(
        self,
        ttl: float = DEFAULT_LOCK_TTL,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        check_ttl(ttl)
        self.ttl = ttl
        self._clock = clock
        self._wall = wall
        self._held: dict[int, tuple[float, Lease]] = {}  # channel -> (expires, lease)

    async def acquire(self, channel_id: int, owner: str, node: str, token: int) -> Lease | None:
        if self._current(channel_id) is not None:
            return None
        return self._grant(Lease(channel_id, owner, token, node))

    async def renew(self, lease: Lease) -> Lease | None:
        current = self._current(lease.channel_id)
        if current is None or current.token != lease.token:
            return None
        return self._grant(current)

    async def release(self, lease: Lease) -> None:
        current = self._current(lease.channel_id)
        if current is not None and current.token == lease.token:
            del self._held[lease.channel_id]

    async def take_over(self, stale: Lease, owner: str, node: str, token: int) -> Lease | None:
        check_successor(stale, token)
        current = self._current(stale.channel_id)
        if current is None or current.token != stale.token:
            return None
        return self._grant(Lease(stale.channel_id, owner, token, node))

    async def holder(self, channel_id: int) -> Lease | None:
        return self._current(channel_id)

    def _current(self, channel_id: int) -> Lease | None:
        found = self._held.get(channel_id)
        if found is None:
            return None
        expires, lease = found
        if expires <= self._clock():
            del self._held[channel_id]
            return None
        return lease

    def _grant(self, lease: Lease) -> Lease:
        granted = dataclasses.replace(lease, renewed_at=self._wall())
        self._held[lease.channel_id] = (self._clock() + self.ttl, granted)
        return granted


class InProcessFencing:
    """Growing tokens for one process; nothing outlives it, so neither must the counter."""

    def __init__(self, start: int = 1) -> None:
        self._tokens = itertools.count(start)

    async def next_token(self) -> int:
        return next(self._tokens)


# --- Node registry ---------------------------------------------------------------------------


class InProcessRegistry:
    """Nodes that heartbeat; one that stops calling is gone after its TTL."""

    def __init__(self, *, clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._nodes: dict[str, tuple[float, NodeInfo]] = {}  # node id -> (expires, info)

    async def heartbeat(self, node: NodeInfo, ttl: float) -> None:
        """Register or refresh; heartbeat_at is stamped here, like the Redis engine does."""
        check_ttl(ttl)
        stamped = dataclasses.replace(node, heartbeat_at=self._wall())
        self._nodes[node.node_id] = (self._clock() + ttl, stamped)

    async def nodes(self) -> list[NodeInfo]:
        now = self._clock()
        for node_id in [n for n, (expires, _) in self._nodes.items() if expires <= now]:
            del self._nodes[node_id]
        return [info for _, (_, info) in sorted(self._nodes.items())]

    async def remove(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)


# --- Thumbnails ------------------------------------------------------------------------------


class InProcessThumbnails:
    """The latest picture per channel; an entry past its TTL is gone."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[int, tuple[float, Thumbnail]] = {}  # channel -> (expires, picture)
        self._sweep_at = 0.0

    async def put(self, channel_id: int, thumbnail: Thumbnail, ttl: float) -> None:
        check_ttl(ttl)
        now = self._clock()
        self._entries[channel_id] = (now + ttl, thumbnail)
        if now >= self._sweep_at:
            # Pictures of channels gone offline go here, once per TTL: the dict holds
            # what was live within about two TTLs, however many channels come and go.
            self._sweep_at = now + ttl
            for channel in [c for c, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[channel]

    async def get(self, channel_id: int) -> Thumbnail | None:
        entry = self._entries.get(channel_id)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]
