"""What only the in-process engine has: a bounded cache, a local counter, local queues."""

from __future__ import annotations

import asyncio
import logging

import pytest

from stream_sync.state.inprocess import (
    InProcessBus,
    InProcessFencing,
    InProcessKeyCache,
    LogThrottle,
    RefusalLog,
)
from stream_sync.state.interfaces import CachedKey, KeyState, NodeUp, StreamStats

from .conftest import FakeClock, next_event


def entry(key_id: str) -> CachedKey:
    return CachedKey(key_id, KeyState.UNKNOWN)


async def test_a_full_cache_drops_expired_entries_first() -> None:
    clock = FakeClock()
    cache = InProcessKeyCache(clock=clock.monotonic, max_entries=10)
    for i in range(5):
        await cache.fill(entry(f"short{i}"), 1.0)
    for i in range(5):
        await cache.fill(entry(f"long{i}"), 100.0)
    clock.advance(2.0)
    assert await cache.fill(entry("new"), 100.0) is True
    assert len(cache) == 6
    for i in range(5):
        assert await cache.get(f"long{i}") is not None


async def test_a_full_cache_evicts_the_oldest_writes() -> None:
    cache = InProcessKeyCache(clock=FakeClock().monotonic, max_entries=10)
    for i in range(10):
        await cache.fill(entry(f"k{i}"), 100.0)
    await cache.replace(entry("k0"), 100.0)  # rewritten: now the newest
    await cache.fill(entry("new"), 100.0)
    assert len(cache) <= 10
    assert await cache.get("k1") is None
    assert await cache.get("k0") is not None
    assert await cache.get("new") is not None
    assert await cache.get("k9") is not None


async def test_the_cache_never_outgrows_its_bound() -> None:
    cache = InProcessKeyCache(clock=FakeClock().monotonic, max_entries=100)
    for i in range(1000):
        await cache.fill(entry(f"k{i}"), 100.0)
        assert len(cache) <= 100
    assert await cache.get("k999") is not None


async def test_fencing_tokens_grow() -> None:
    fencing = InProcessFencing()
    tokens = [await fencing.next_token() for _ in range(5)]
    assert tokens == sorted(set(tokens))
    assert tokens[0] >= 1
    assert await InProcessFencing(start=1000).next_token() == 1000


async def test_a_slow_subscriber_loses_its_oldest_events(caplog: pytest.LogCaptureFixture) -> None:
    bus = InProcessBus(queue_size=3)
    slow, other = bus.subscribe(), bus.subscribe()
    for i in range(5):
        await bus.publish(NodeUp(f"n{i}"))
    assert [await next_event(slow) for _ in range(3)] == [NodeUp("n2"), NodeUp("n3"), NodeUp("n4")]
    assert await next_event(other) == NodeUp("n2")
    drops = [r for r in caplog.records if "behind" in r.getMessage()]
    assert len(drops) == 1  # four drops, one line


def _stats(channel_id: int) -> StreamStats:
    return StreamStats(channel_id, channel_id, "n1", 1_800_000_000.0, {"video_bytes": channel_id})


async def test_a_round_of_statistics_is_bounded_like_single_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = InProcessBus(queue_size=3)
    watcher, plain = bus.subscribe(stats=True), bus.subscribe()
    await bus.publish(NodeUp("n0"))
    await bus.publish_stats([_stats(i) for i in range(1, 5)])  # five queued, room for three
    assert [await next_event(watcher) for _ in range(3)] == [_stats(2), _stats(3), _stats(4)]
    assert "behind" in caplog.text
    await bus.publish(NodeUp("n5"))  # statistics reach only the subscribers that ask
    assert [await next_event(plain) for _ in range(2)] == [NodeUp("n0"), NodeUp("n5")]
    assert await next_event(watcher) == NodeUp("n5")


async def test_a_subscriber_waiting_for_events_ends_when_closed() -> None:
    bus = InProcessBus()
    subscription = bus.subscribe()
    waiting = asyncio.create_task(next_event(subscription))
    await asyncio.sleep(0)  # it waits for an event now
    subscription.close()
    with pytest.raises(StopAsyncIteration):
        await waiting


async def test_a_closed_bus_ends_every_subscription() -> None:
    bus = InProcessBus()
    before = bus.subscribe()
    bus.close()
    after = bus.subscribe()
    await bus.publish(NodeUp("n1"))
    for subscription in (before, after):
        with pytest.raises(StopAsyncIteration):
            await next_event(subscription)


def test_log_throttle_counts_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    throttle = LogThrottle(60.0, clock=clock.monotonic)
    logger = logging.getLogger("test.throttle")
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        for _ in range(4):
            throttle.log(logger, logging.WARNING, "trouble %s", "x")
        clock.advance(61)
        throttle.log(logger, logging.WARNING, "trouble %s", "x")
    assert [r.getMessage() for r in caplog.records] == [
        "trouble x",
        "trouble x (3 more since the last report)",
    ]


def test_refusal_log_counts_every_reason_and_throttles_each_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    logger = logging.getLogger("test.refusals")
    refusals = RefusalLog(logger, 10.0, clock.monotonic)
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        for _ in range(100):
            refusals.note("flood", "flood from %s", "a")
        refusals.note("rare", "rare from %s", "b")  # not hidden behind the flood
    assert refusals.counts == {"flood": 100, "rare": 1}
    assert [r.getMessage() for r in caplog.records] == ["flood from a", "rare from b"]
