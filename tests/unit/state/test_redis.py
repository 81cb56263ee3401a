"""What only the Redis engine has: its key layout, foreign data, and Redis going away."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis import exceptions as redis_errors

from stream_sync.state.codec import encode_event
from stream_sync.state.errors import StateUnavailable
from stream_sync.state.interfaces import (
    CachedKey,
    KeyState,
    Lease,
    NodeInfo,
    NodeLost,
    NodeUp,
    StopRequested,
    StreamStats,
)
from stream_sync.state.redis import RedisState, _lost
from tests.support import REDIS_URL, RedisServer

from .conftest import next_event

KEY_ID = "SeCrEtKeyId9"  # must never show up in an error message
NODE = NodeInfo("ingest-a", "rtmp://a.example/live", capacity=5, capacity_mbps=0.0)


async def test_every_key_lives_under_the_prefix(redis: RedisState) -> None:
    await redis.key_cache.fill(CachedKey(KEY_ID, KeyState.UNKNOWN), 60.0)
    await redis.locks.acquire(7, "ingest-a/c1", "ingest-a", 1)
    await redis.registry.heartbeat(NODE, 60.0)
    names = sorted([name.decode() async for name in redis.client.scan_iter(f"{redis.prefix}:*")])
    assert names == [
        redis.key(*parts)
        for parts in [("key", KEY_ID), ("lock", 7), ("node", "ingest-a"), ("nodes",)]
    ]
    assert redis.bus.channel == f"{redis.prefix}:events"


async def test_entries_carry_the_ttl_they_were_given(redis: RedisState) -> None:
    await redis.key_cache.fill(CachedKey(KEY_ID, KeyState.UNKNOWN), 30.0)
    await redis.locks.acquire(7, "ingest-a/c1", "ingest-a", 1)
    await redis.registry.heartbeat(NODE, 15.0)
    assert 29_000 < await redis.client.pttl(redis.key("key", KEY_ID)) <= 30_000
    assert (
        redis.locks.ttl * 1000 - 1000
        < await redis.client.pttl(redis.key("lock", 7))
        <= redis.locks.ttl * 1000
    )
    assert 14_000 < await redis.client.pttl(redis.key("node", "ingest-a")) <= 15_000


async def test_renewed_at_comes_from_the_redis_clock(redis: RedisState) -> None:
    seconds, micros = await redis.client.time()
    lease = await redis.locks.acquire(7, "ingest-a/c1", "ingest-a", 1)
    assert lease is not None
    assert 0 <= lease.renewed_at - (seconds + micros / 1e6) < 1.0
    await redis.registry.heartbeat(NODE, 60.0)
    [registered] = await redis.registry.nodes()
    assert 0 <= registered.heartbeat_at - (seconds + micros / 1e6) < 1.0


async def test_expired_nodes_leave_the_set(redis: RedisState) -> None:
    await redis.registry.heartbeat(NODE, 60.0)
    await redis.client.delete(redis.key("node", "ingest-a"))  # as if its TTL ran out
    assert await redis.registry.nodes() == []
    assert await redis.client.smembers(redis.key("nodes")) == set()


async def test_foreign_entries_read_as_misses(
    redis: RedisState, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.client.set(redis.key("key", KEY_ID), b"\xff not json")
    await redis.client.set(redis.key("lock", 7), b'{"token": "one"}')
    await redis.client.set(redis.key("node", "ingest-z"), b"[]")
    await redis.client.sadd(redis.key("nodes"), "ingest-z")
    assert await redis.key_cache.get(KEY_ID) is None
    assert await redis.locks.holder(7) is None
    assert await redis.registry.nodes() == []
    # A stranger's lease is never ours to renew, release or take over.
    stranger = Lease(7, "ingest-a/c1", 1, "ingest-a")
    assert await redis.locks.renew(stranger) is None
    assert await redis.locks.take_over(stranger, "ingest-b/c1", "ingest-b", 2) is None
    await redis.locks.release(stranger)
    assert await redis.client.get(redis.key("lock", 7)) == b'{"token": "one"}'
    assert KEY_ID not in caplog.text


async def test_malformed_bus_messages_are_skipped(
    redis: RedisState, caplog: pytest.LogCaptureFixture
) -> None:
    subscription = redis.bus.subscribe()
    await redis.bus.ready()
    for junk in (
        b"\xff\xfe",
        b"not json",
        b"[1, 2]",
        b'{"type": "Nope"}',
        b'{"type": "NodeUp"}',
        b"[" * 100_000,
    ):
        await redis.client.publish(redis.bus.channel, junk)
    await redis.bus.publish(NodeUp("ingest-a"))
    assert await next_event(subscription) == NodeUp("ingest-a")
    skipped = [r for r in caplog.records if "malformed bus message" in r.getMessage()]
    assert len(skipped) == 1  # six messages, one line a minute


async def test_the_statistics_channel_carries_statistics_only(redis: RedisState) -> None:
    subscription = redis.bus.subscribe(stats=True)
    await redis.bus.ready()
    stats = StreamStats(7, 42, "ingest-a", 1_700_000_000.5, {"video_frames": 900})
    for junk in (
        b'{"type": "StreamStats"}',  # one event, not a list
        b'[{"type": "NodeLost", "node": "ingest-a"}]',  # a lifecycle event smuggled in
        b"[" + json.dumps(encode_event(stats)).encode() + b", 1]",  # one bad item spoils all
    ):
        await redis.client.publish(redis.bus.stats_channel, junk)
    await redis.bus.publish_stats([stats])
    assert await next_event(subscription) == stats


async def test_a_second_state_hears_the_first(redis: RedisState) -> None:
    other = RedisState.connect(REDIS_URL, redis.prefix)
    try:
        subscription = other.bus.subscribe()
        await other.bus.ready()
        await redis.bus.publish(NodeLost("ingest-b"))
        assert await next_event(subscription) == NodeLost("ingest-b")
    finally:
        await other.close()


async def test_a_control_only_bus_hears_control_events_alone(redis: RedisState) -> None:
    """An ingest-only process: not the lifecycle of every stream, nor their statistics."""
    ingest = RedisState.connect(REDIS_URL, redis.prefix, control_only=True)
    everything = redis.bus.subscribe()
    try:
        with pytest.raises(RuntimeError, match="no statistics"):
            ingest.bus.subscribe(stats=True)
        subscription = ingest.bus.subscribe()
        await ingest.bus.ready()
        await redis.bus.ready()
        await redis.bus.publish(NodeLost("ingest-b"))  # lifecycle: not for it
        await redis.bus.publish(StopRequested(7, "kicked"))
        assert await next_event(subscription) == StopRequested(7, "kicked")
        await ingest.bus.publish(NodeLost("ingest-c"))  # what it publishes, all others hear
        heard = [await next_event(everything) for _ in range(3)]
        assert heard == [NodeLost("ingest-b"), StopRequested(7, "kicked"), NodeLost("ingest-c")]
    finally:
        everything.close()
        await ingest.close()


async def test_close_ends_subscriptions(redis: RedisState) -> None:
    state = RedisState.connect(REDIS_URL, redis.prefix)
    subscription = state.bus.subscribe()
    await state.bus.ready()
    await state.close()
    with pytest.raises(StopAsyncIteration):
        await next_event(subscription)
    assert state.bus.subscribe().closed


# --- Redis going away: a private server this test may kill, pause and restart ------------


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, RedisState]]:
    with RedisServer(tmp_path) as server:
        server.start()
        await server.wait_ready()
        state = RedisState.connect(server.url, "test")
        try:
            yield server, state
        finally:
            await state.close()


def every_call(state: RedisState) -> dict[str, Callable[[], Awaitable[object]]]:
    lease = Lease(1, "ingest-a/c1", 1, "ingest-a")
    entry = CachedKey(KEY_ID, KeyState.UNKNOWN)
    return {
        "key_cache.get": lambda: state.key_cache.get(KEY_ID),
        "key_cache.fill": lambda: state.key_cache.fill(entry, 60.0),
        "key_cache.replace": lambda: state.key_cache.replace(entry, 60.0),
        "key_cache.tombstone": lambda: state.key_cache.tombstone(KEY_ID, 60.0),
        "locks.acquire": lambda: state.locks.acquire(2, "ingest-a/c2", "ingest-a", 2),
        "locks.renew": lambda: state.locks.renew(lease),
        "locks.release": lambda: state.locks.release(lease),
        "locks.take_over": lambda: state.locks.take_over(lease, "ingest-b/c1", "ingest-b", 3),
        "locks.holder": lambda: state.locks.holder(1),
        "registry.heartbeat": lambda: state.registry.heartbeat(NODE, 60.0),
        "registry.nodes": state.registry.nodes,
        "registry.remove": lambda: state.registry.remove("ingest-z"),
        "bus.publish": lambda: state.bus.publish(NodeUp("ingest-a")),
    }


async def failure_latencies(calls: dict[str, Callable[[], Awaitable[object]]]) -> dict[str, float]:
    """Seconds each call took to raise StateUnavailable, whose message must be safe."""
    latencies = {}
    for name, call in calls.items():
        started = time.perf_counter()
        with pytest.raises(StateUnavailable) as caught:
            await call()
        latencies[name] = round(time.perf_counter() - started, 3)
        message = str(caught.value)
        assert "\n" not in message
        assert KEY_ID not in message
        assert "127.0.0.1" in message
    print(f"failure latencies: {latencies}")
    return latencies


async def test_a_redis_restart(
    private: tuple[RedisServer, RedisState], caplog: pytest.LogCaptureFixture
) -> None:
    server, state = private
    caplog.set_level(logging.INFO, logger="stream_sync.state.redis")
    subscription = state.bus.subscribe()
    assert await state.locks.acquire(1, "ingest-a/c1", "ingest-a", 1) is not None
    await state.bus.publish(NodeUp("ingest-a"))
    assert await next_event(subscription) == NodeUp("ingest-a")

    server.kill()
    latencies = await failure_latencies(every_call(state))
    assert max(latencies.values()) < 1.5
    assert await state.ping() is False

    server.start()  # same port, empty
    await server.wait_ready()
    assert await state.ping() is True
    assert await state.locks.holder(1) is None
    for call in every_call(state).values():
        await call()  # each works again at the first attempt
    async with asyncio.timeout(5):  # the reader's backoff is at most 2 s
        await state.bus.ready()
    await state.bus.publish(NodeLost("ingest-b"))
    assert await next_event(subscription) == NodeLost("ingest-b")

    messages = [record.getMessage() for record in caplog.records]
    assert sum("is unavailable" in m for m in messages) == 1  # once per transition
    assert sum("is available again" in m for m in messages) == 1
    assert sum("event bus is not subscribed" in m for m in messages) == 1
    assert sum("event bus subscribed" in m for m in messages) == 1
    assert KEY_ID not in caplog.text


async def test_connections_idle_through_a_restart_fail_no_call_after_it(
    private: tuple[RedisServer, RedisState],
) -> None:
    """redis-py takes a connection the restart closed for a live one (an admission failed)."""
    server, state = private
    await state.warm(8)  # idle in the pool, as an ingest process's are after its start
    server.kill()
    assert await state.ping() is False
    server.start()  # same port, empty
    await server.wait_ready()
    assert await state.ping() is True
    # Together, so they draw every pooled connection, not the one the ping reopened.
    results = await asyncio.gather(
        *(state.locks.holder(channel) for channel in range(8)), return_exceptions=True
    )
    assert results == [None] * 8


async def test_a_hung_redis_fails_calls_within_the_deadline(
    private: tuple[RedisServer, RedisState],
) -> None:
    server, state = private
    assert await state.ping() is True
    server.pause()  # connections stay open and nothing answers
    try:
        calls = every_call(state)
        latencies = await failure_latencies(
            {name: calls[name] for name in ("key_cache.get", "locks.acquire", "bus.publish")}
        )
        assert max(latencies.values()) < 1.5
    finally:
        server.resume()
    assert await state.ping() is True


async def test_a_hung_redis_leaves_no_pipeline_holding_a_connection(
    private: tuple[RedisServer, RedisState],
) -> None:
    """A timeout inside a pipeline's script loading once kept its connection (the fault tests)."""
    server, state = private
    reported: list[str] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _, context: reported.append(str(context.get("message")))
    )
    assert await state.locks.acquire(1, "ingest-a/c1", "ingest-a", 1) is not None
    server.pause()
    try:
        for channel in range(2, 4):
            with pytest.raises(StateUnavailable):
                await state.locks.acquire(channel, "ingest-a/c1", "ingest-a", channel)
    finally:
        server.resume()
    gc.collect()
    assert reported == []


def test_a_failure_while_handling_a_lost_connection_is_an_outage() -> None:
    """The bus reader once logged a Redis outage as a bug (the fault tests saw it).

    redis-py reconnecting a subscription over uvloop to a Redis just killed raised the
    loop's RuntimeError about the closed transport while handling the ConnectionError.
    """
    closed = RuntimeError("unable to perform operation on <TCPTransport closed=True>")
    closed.__context__ = redis_errors.ConnectionError("Connection closed by server.")
    assert _lost(closed)
    assert not _lost(RuntimeError("a bug"))


async def test_a_node_starts_while_redis_is_down(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        state = RedisState.connect(server.url, "test")  # nothing listens on the port yet
        try:
            subscription = state.bus.subscribe()
            assert await state.ping() is False
            started = time.perf_counter()
            with pytest.raises(StateUnavailable):
                await state.bus.publish(NodeUp("ingest-a"))
            assert time.perf_counter() - started < 0.5  # refused at once, no waiting
            server.start()
            await server.wait_ready()
            async with asyncio.timeout(5):
                await state.bus.ready()
            await state.bus.publish(NodeUp("ingest-a"))
            assert await next_event(subscription) == NodeUp("ingest-a")
        finally:
            await state.close()


async def test_a_silent_subscription_is_replaced(private: tuple[RedisServer, RedisState]) -> None:
    server, state = private
    bus = state.bus
    bus.TICK, bus.PING_AFTER, bus.PING_ANSWER = 0.05, 0.2, 0.2  # instead of 1, 5 and 3 s
    subscription = bus.subscribe()
    await bus.ready()
    server.pause()  # the connection stays open and nothing answers: no error, only silence
    try:
        async with asyncio.timeout(2):
            while bus.subscribed:  # noqa: ASYNC110 (what the reader decides has no event)
                await asyncio.sleep(0.02)
    finally:
        server.resume()
    async with asyncio.timeout(5):
        await bus.ready()
    await bus.publish(NodeUp("ingest-a"))
    assert await next_event(subscription) == NodeUp("ingest-a")
