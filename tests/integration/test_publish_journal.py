"""A publish does not wait for the database, and its records keep the order of events.

The encoder hears Publish.Start once the lock is held; the session row is written
afterwards (with the first media when it comes soon), and the end of a publish is
recorded only after its start, however slow the database is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from stream_sync.credentials import service
from stream_sync.db.models import PublishSession
from stream_sync.ingest.recorder import Recorder
from stream_sync.node import Node
from stream_sync.rtmp.client import PublishStarted as ClientPublishStarted
from stream_sync.state.interfaces import PublishEnded, PublishStarted, StatusChanged
from tests.support import BusRecorder, RtmpTestClient

# An AVC keyframe header with an empty body: enough for the server to count media.
KEYFRAME = bytes([0x17, 0x01, 0, 0, 0])


class HeldStart:
    """The node's own recorder, with the start of a publish held until the test says."""

    def __init__(self, inner: Recorder) -> None:
        self.inner = inner
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls: list[str] = []

    async def started(self, event: PublishStarted, **kwargs: Any) -> Any:
        self.calls.append("started:waiting")
        self.entered.set()
        await self.release.wait()
        self.calls.append(f"started:media={kwargs.get('media')}")
        return await self.inner.started(event, **kwargs)

    async def ended(self, event: PublishEnded, **kwargs: Any) -> Any:
        self.calls.append("ended")
        return await self.inner.ended(event, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def open_sessions(node: Node) -> list[PublishSession]:
    async with node.sessions() as session:
        return list((await session.scalars(select(PublishSession))).all())


@pytest.fixture
async def held(node: Node) -> AsyncIterator[HeldStart]:
    """The node's recorder, wrapped; released at the end whatever the test did."""
    assert node.ingest.recorder is not None
    wrapped = HeldStart(node.ingest.recorder)
    node.ingest.recorder = wrapped
    yield wrapped
    wrapped.release.set()


async def connected(node: Node, key: str) -> tuple[RtmpTestClient, list[Any]]:
    client = await RtmpTestClient.open(node.rtmp_port)
    await client.connect()
    return client, await client.publish(key)


async def test_publish_starts_before_the_database_writes_and_ends_after(
    node: Node, channel: service.CreatedChannel, bus: BusRecorder, held: HeldStart
) -> None:
    client, events = await connected(node, channel.key)
    assert any(isinstance(event, ClientPublishStarted) for event in events)
    await asyncio.wait_for(held.entered.wait(), 5)  # no media: it stops waiting for some
    assert await open_sessions(node) == []  # the encoder did not wait for this row

    client.close()  # ends before its start is written
    await asyncio.wait_for(node.ingest.wait_idle(), 5)  # its end is under way
    await asyncio.sleep(0)  # a step for anything scheduled with it
    assert held.calls == ["started:waiting"]
    held.release.set()
    ended = await bus.wait_for(PublishEnded)
    started = bus.of(PublishStarted)[0]

    assert held.calls == ["started:waiting", "started:media=False", "ended"]
    assert started.session_id is not None
    assert ended.session_id == started.session_id
    assert 0 < started.seq < ended.seq  # recorded in this order
    rows = await open_sessions(node)
    assert [row.id for row in rows] == [started.session_id]
    assert rows[0].ended_at is not None
    assert rows[0].status == "offline"


async def test_first_media_is_recorded_with_the_start(
    node: Node, channel: service.CreatedChannel, bus: BusRecorder, held: HeldStart
) -> None:
    held.release.set()
    client, _ = await connected(node, channel.key)
    assert client.conn is not None
    client.conn.send_video(0, KEYFRAME)
    await client.send(client.conn.data_to_send())

    live = await bus.wait_for(StatusChanged, lambda change: change.status == "live")
    started = bus.of(PublishStarted)[0]
    assert held.calls == ["started:waiting", "started:media=True"]
    assert live.session_id == started.session_id
    assert 0 < started.seq < live.seq
    client.close()
    await bus.wait_for(PublishEnded)
