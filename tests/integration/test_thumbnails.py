"""Live pictures of real FFmpeg streams: one soon after going live, more while watched."""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.node import Node
from stream_sync.state.interfaces import PublishEnded, StreamStats, ThumbnailsWanted
from tests.integration.conftest import node_settings, publish_test_pattern, running_node
from tests.support import BusRecorder

pytestmark = pytest.mark.ffmpeg

SECONDS = 6


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    # A budget that never binds: these tests are about when pictures are due, and on a
    # loaded machine 0.2 % of a core is about one small picture a second, the pace
    # asked for here (the budget has its own tests in tests/unit/ingest).
    settings = node_settings(
        tmp_path / "data", thumbnail_watched_interval=1, thumbnail_cpu_share=100
    )
    async with running_node(settings) as running:
        yield running


async def create(node: Node, name: str) -> service.CreatedChannel:
    async with node.sessions() as session:
        return await service.create_channel(
            session, secrets=node.store.secrets, name=name, actor=Actor.cli()
        )


def pictures(bus: BusRecorder, channel_id: int) -> list[float]:
    """The picture times the stream's statistics announced, in order, without repeats."""
    seen: list[float] = []
    for stats in bus.of(StreamStats):
        at = stats.thumbnail_at
        if stats.channel_id == channel_id and at is not None and (not seen or at > seen[-1]):
            seen.append(at)
    return seen


def decoded(jpeg: bytes) -> av.VideoFrame:
    with av.open(io.BytesIO(jpeg)) as container:
        return next(container.decode(video=0))


async def test_a_stream_nobody_watches_gets_one_picture_soon_after_going_live(
    node: Node, bus: BusRecorder
) -> None:
    channel = await create(node, "quiet")
    started = time.time()
    await publish_test_pattern(node, channel.key, SECONDS)
    await bus.wait_for(PublishEnded)

    times = pictures(bus, channel.channel_id)
    assert len(times) == 1, times  # the next one is due after thumbnail_interval (30 s)
    assert times[0] - started < 3  # the first keyframe after the first statistics
    stored = await node.state.thumbnails.get(channel.channel_id)
    assert stored is not None
    assert stored.at == times[0]
    frame = decoded(stored.jpeg)
    assert (frame.width, frame.height) == (320, 240)  # never enlarged past the stream's own


async def test_a_watched_stream_gets_a_new_picture_every_interval(
    node: Node, bus: BusRecorder
) -> None:
    watched, other = await create(node, "watched"), await create(node, "other")
    await node.bus.publish(ThumbnailsWanted([watched.channel_id], time.time() + 60))
    jpegs: dict[float, bytes] = {}

    async def collect() -> None:
        """Each announced picture from the store, before the next replaces it."""

        async def announced_after(count: int) -> int:
            await bus.until(lambda: len(pictures(bus, watched.channel_id)) > count)
            return len(pictures(bus, watched.channel_id))

        count = 0
        while True:
            count = await announced_after(count)
            picture = await node.state.thumbnails.get(watched.channel_id)
            assert picture is not None
            jpegs[picture.at] = picture.jpeg

    collector = asyncio.create_task(collect())
    try:
        await publish_test_pattern(node, watched.key, SECONDS)
    finally:
        collector.cancel()
    await bus.wait_for(PublishEnded)
    await publish_test_pattern(node, other.key, SECONDS)
    await bus.wait_for(PublishEnded, lambda e: e.channel_id == other.channel_id)

    times = pictures(bus, watched.channel_id)
    assert len(times) >= SECONDS - 2, times  # one a second (thumbnail_watched_interval)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.5 <= gap <= 2.5 for gap in gaps), gaps
    assert set(jpegs) <= set(times)
    assert len(jpegs) >= 3
    assert len(set(jpegs.values())) == len(jpegs)  # the pattern moves: every picture is new
    assert len(pictures(bus, other.channel_id)) == 1  # not watched: one picture only
