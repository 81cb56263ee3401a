"""The event bus on both engines: fan-out in order, close, every event type intact."""

from __future__ import annotations

import asyncio

import pytest

from stream_sync.state.codec import EVENT_TYPES
from stream_sync.state.interfaces import (
    BusEvent,
    DrainRequested,
    HealthChanged,
    KeyRevoked,
    NodeLost,
    NodeUp,
    OutputsChanged,
    PublishEnded,
    PublishRefusalsCounted,
    PublishRefused,
    PublishStarted,
    RecordingDeleted,
    StatusChanged,
    StopRequested,
    StreamKeyReset,
    StreamStats,
    ThumbnailsWanted,
)

from .conftest import Engine, next_event

SAMPLES: list[BusEvent] = [
    StatusChanged(
        7, "reconnecting", 42, 1_700_000_000.5, grace_until=1_700_000_030.5,
        reason="node lost", node="ingest-a", seq=5,
    ),
    KeyRevoked(7, "AbCdEfGh1234"),
    PublishStarted(7, "AbCdEfGh1234", "c-17", 42, node="ingest-a", seq=3),
    PublishStarted(8, "ZyXwVuTs9876", "c-18", None),
    PublishEnded(
        7, "AbCdEfGh1234", "c-17", 42, "encoder closed", 123_456_789, 900, 1400, "avc1", "mp4a",
        node="ingest-a", seq=4,
    ),
    PublishEnded(8, "ZyXwVuTs9876", "c-18", None, "key revoked", 0, 0, 0, None, None),
    PublishRefused(None, None, "malformed key", "203.0.113.9:50312", node="ingest-b"),
    PublishRefused(7, "AbCdEfGh1234", "busy", "[2001:db8::1]:50000"),
    StopRequested(7),
    StopRequested(7, reason="kicked by alice"),
    DrainRequested("ingest-a", 1_700_000_123.125),
    NodeUp("ingest-c"),
    NodeLost("ingest-b"),
    StreamStats(7, 42, "ingest-a", 1_700_000_000.5, {"video_frames": 900, "media_bytes": 2**40}),
    StreamKeyReset(7, "NewKeyId1234", ["AbCdEfGh1234"], seq=6),
    PublishRefusalsCounted(7, "AbCdEfGh1234", "203.0.113.9", "revoked_key", 12, 1_700_000_040.0),
    HealthChanged(7, 42, "bad", "good", ["no_video"], 1_700_000_001.5, seq=7),
    StreamStats(7, 42, "ingest-a", 1_700_000_001.5, {}, thumbnail_at=1_700_000_000.75),
    ThumbnailsWanted([7, 8], 1_700_000_006.0),
    OutputsChanged(7),
    RecordingDeleted("ingest-a", "7/studio-20270202-101530-p1.flv"),
]  # fmt: skip


async def test_samples_cover_every_event_type() -> None:
    assert {type(event).__name__ for event in SAMPLES} == set(EVENT_TYPES)


async def test_every_event_type_arrives_intact(engine: Engine) -> None:
    subscription = engine.bus.subscribe(stats=True)
    for event in SAMPLES:
        await engine.bus.publish(event)
    received = [await next_event(subscription) for _ in SAMPLES]
    assert received == SAMPLES
    assert [type(e) for e in received] == [type(e) for e in SAMPLES]
    subscription.close()


async def test_every_subscriber_hears_every_event_in_order(engine: Engine) -> None:
    subscriptions = [engine.bus.subscribe() for _ in range(3)]
    events = [NodeUp(f"ingest-{i}") for i in range(20)]
    for event in events:
        await engine.bus.publish(event)
    for subscription in subscriptions:
        assert [await next_event(subscription) for _ in events] == events
        subscription.close()


async def test_a_subscription_hears_only_what_follows_it(engine: Engine) -> None:
    early = engine.bus.subscribe()
    await engine.bus.publish(NodeUp("before"))
    late = engine.bus.subscribe()
    await engine.bus.publish(NodeUp("after"))
    heard_late = [await next_event(late)]
    while heard_late[-1] != NodeUp("after"):
        heard_late.append(await next_event(late))
    if engine.name == "inprocess":
        assert heard_late == [NodeUp("after")]
    else:  # Redis delivers asynchronously: "before" may still have been on its way
        assert heard_late in ([NodeUp("after")], [NodeUp("before"), NodeUp("after")])
    assert await next_event(early) == NodeUp("before")
    assert await next_event(early) == NodeUp("after")


async def test_close_stops_delivery(engine: Engine) -> None:
    kept, closed = engine.bus.subscribe(), engine.bus.subscribe()
    await engine.bus.publish(NodeUp("one"))
    assert await next_event(closed) == NodeUp("one")
    closed.close()
    await engine.bus.publish(NodeUp("two"))
    assert await next_event(kept) == NodeUp("one")
    assert await next_event(kept) == NodeUp("two")
    with pytest.raises(StopAsyncIteration):
        await next_event(closed)


async def test_close_wakes_a_waiting_subscriber(engine: Engine) -> None:
    subscription = engine.bus.subscribe()
    received: list[BusEvent] = []
    heard = asyncio.Event()

    async def consume() -> str:
        async for event in subscription:
            received.append(event)
            heard.set()
        return "ended"

    consumer = asyncio.get_running_loop().create_task(consume())
    await engine.bus.publish(NodeUp("one"))
    async with asyncio.timeout(2):
        await heard.wait()  # the consumer is back to waiting for the next event
    subscription.close()
    async with asyncio.timeout(2):
        assert await consumer == "ended"
    assert received == [NodeUp("one")]


async def test_statistics_reach_only_who_asked_and_a_batch_arrives_whole(engine: Engine) -> None:
    quiet, watching = engine.bus.subscribe(), engine.bus.subscribe(stats=True)
    batch = [
        StreamStats(i, i, "ingest-a", 1_700_000_000.0 + i, {"video_frames": i}) for i in range(250)
    ]
    await engine.bus.publish_stats(batch)  # more than one Redis message's worth
    await engine.bus.publish(NodeUp("after"))
    assert [await next_event(watching) for _ in batch] == batch
    assert await next_event(watching) == NodeUp("after")
    assert await next_event(quiet) == NodeUp("after")  # no statistics before it
    quiet.close()
    watching.close()
