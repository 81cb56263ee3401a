"""Both state engines behind one harness, so every behaviour is tested on each.

The in-process engine runs on a fake clock: tests move time instead of sleeping.
The Redis engine runs against the shared Redis under a prefix of its own; where a
test needs an entry to be older, the harness shortens the key's TTL, and only where
a real TTL must run out does it poll (never for more than a second).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import uuid4

import pytest

from stream_sync.state.inprocess import (
    InProcessBus,
    InProcessKeyCache,
    InProcessLocks,
    InProcessRegistry,
    InProcessThumbnails,
)
from stream_sync.state.interfaces import (
    BusEvent,
    EventBus,
    KeyCache,
    NodeRegistry,
    PublishLocks,
    ThumbnailStore,
)
from stream_sync.state.redis import RedisLocks, RedisState
from tests.support import REDIS_URL, require

LOCK_TTL = 10.0
SHORT_TTL = 0.2  # for the tests where a real TTL has to run out


class FakeClock:
    """A monotonic and a wall clock that move only when told to, together."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.epoch = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.epoch

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.epoch += seconds


class Engine:
    name: str
    cache: KeyCache
    locks: PublishLocks  # with LOCK_TTL
    registry: NodeRegistry
    thumbnails: ThumbnailStore
    bus: EventBus

    def short_locks(self) -> PublishLocks:
        """Locks whose leases live SHORT_TTL seconds."""
        raise NotImplementedError

    async def age(self, seconds: float, *key: object) -> None:
        """Make the stored entry under key `seconds` older (its TTL runs out sooner)."""
        raise NotImplementedError

    async def let_expire(self, ttl: float, gone: Callable[[], Awaitable[bool]]) -> None:
        """Let a TTL of ttl seconds pass; fails unless gone() says the entry went."""
        raise NotImplementedError

    def tick(self) -> None:
        """Let the wall clock move on before a call that stamps a time."""


class InProcessEngine(Engine):
    name = "inprocess"

    def __init__(self) -> None:
        self.clock = FakeClock()
        clock, wall = self.clock.monotonic, self.clock.wall
        self.cache = InProcessKeyCache(clock=clock, wall=wall)
        self.locks = InProcessLocks(LOCK_TTL, clock=clock, wall=wall)
        self.registry = InProcessRegistry(clock=clock, wall=wall)
        self.thumbnails = InProcessThumbnails(clock=clock)
        self.inprocess_bus = InProcessBus()
        self.bus = self.inprocess_bus

    def short_locks(self) -> PublishLocks:
        return InProcessLocks(SHORT_TTL, clock=self.clock.monotonic, wall=self.clock.wall)

    async def age(self, seconds: float, *key: object) -> None:
        self.clock.advance(seconds)  # everything ages; the tests age one entry at a time

    async def let_expire(self, ttl: float, gone: Callable[[], Awaitable[bool]]) -> None:
        self.clock.advance(ttl * 0.99)
        assert not await gone(), "expired too early"
        self.clock.advance(ttl * 0.02)
        assert await gone()

    def tick(self) -> None:
        self.clock.advance(1.0)


class RedisEngine(Engine):
    name = "redis"

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.cache = state.key_cache
        self.locks = state.locks
        self.registry = state.registry
        self.thumbnails = state.thumbnails
        self.bus = state.bus

    def short_locks(self) -> PublishLocks:
        return RedisLocks(self.state, ttl=SHORT_TTL)

    async def age(self, seconds: float, *key: object) -> None:
        name = self.state.key(*key)
        left = await self.state.client.pttl(name)
        assert left > 0, f"{name} has no TTL"
        remaining = left - round(seconds * 1000)
        if remaining > 0:
            await self.state.client.pexpire(name, remaining)
            return
        await self.state.client.pexpire(name, 1)
        async with asyncio.timeout(1):  # Redis's own expiry, a millisecond away
            while await self.state.client.exists(name):  # noqa: ASYNC110 (Redis has no event for it)
                await asyncio.sleep(0.005)

    async def let_expire(self, ttl: float, gone: Callable[[], Awaitable[bool]]) -> None:
        assert not await gone(), "expired too early"
        # A real TTL must run out here: poll, bounded well under a second past it.
        async with asyncio.timeout(ttl + 0.8):
            while not await gone():  # noqa: ASYNC110 (Redis has no event for it)
                await asyncio.sleep(0.01)


async def redis_state(prefix: str) -> RedisState:
    state = RedisState.connect(REDIS_URL, prefix)
    if not await state.ping():
        await state.close()
        require(False, f"Redis at {REDIS_URL} (set STREAM_SYNC_TEST_REDIS to use another)")
    return state


async def delete_prefix(state: RedisState) -> None:
    names = [name async for name in state.client.scan_iter(match=f"{state.prefix}:*")]
    if names:
        await state.client.delete(*names)


@contextlib.asynccontextmanager
async def private_redis_state() -> AsyncIterator[RedisState]:
    """A RedisState on the shared Redis under a prefix of its own, emptied afterwards."""
    state = await redis_state(f"test:{uuid4().hex}")
    try:
        yield state
    finally:
        await delete_prefix(state)
        await state.close()


@pytest.fixture
async def redis() -> AsyncIterator[RedisState]:
    async with private_redis_state() as state:
        yield state


@pytest.fixture(params=["inprocess", "redis"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    if request.param == "inprocess":
        engine = InProcessEngine()
        yield engine
        engine.inprocess_bus.close()
    else:
        async with private_redis_state() as state:
            yield RedisEngine(state)


async def next_event(subscription: AsyncIterator[BusEvent], timeout: float = 2.0) -> BusEvent:
    async with asyncio.timeout(timeout):
        return await anext(subscription)
