"""Live publishers are read on the poller's rounds, and lose nothing by it.

Once media flows, the sweep hands a plain-TCP publisher to the read poller: the
event loop stops watching its socket and a timer reads it. Media, the stream's
end, a reset, a burst too big for a round and the end of the publish must all
still reach the core, just as with the event loop's reads.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

import pytest

from stream_sync.credentials import service
from stream_sync.ingest import polling
from stream_sync.ingest.protocol import RtmpProtocol
from stream_sync.node import Node
from stream_sync.rtmp.client import PublishStarted
from tests.support import RtmpTestClient

pytestmark = pytest.mark.skipif(not polling.SUPPORTED, reason="the poller needs os.readv")

FRAME = bytes([0x27, 0x01, 0, 0, 0]) + bytes(25_000)  # an AVC inter frame, 25 kB


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll: which reader the server uses, and what the kernel delivered, announce nothing."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - nothing to await: nothing is announced
            await asyncio.sleep(0.02)


class Publisher:
    def __init__(self, client: RtmpTestClient, proto: RtmpProtocol) -> None:
        self.client = client
        self.proto = proto
        self.frames = 0

    async def send_frames(self, count: int) -> None:
        conn = self.client.conn
        assert conn is not None
        for _ in range(count):
            conn.send_video(self.frames * 33, FRAME)
            self.frames += 1
        await self.client.send(conn.data_to_send())

    async def gone(self) -> None:
        """Until the server has closed the connection (only a round's read notices)."""
        await until(lambda: self.proto not in self.proto.server.connections, timeout=2.0)

    async def all_arrived(self) -> None:
        counters = self.proto.conn.counters
        await until(lambda: counters.video_frames == self.frames)


async def polled(node: Node, channel: service.CreatedChannel) -> Publisher:
    """A publisher whose media flowed long enough for the sweep to hand it to the poller."""
    client = await RtmpTestClient.open(node.rtmp_port)
    await client.connect()
    assert any(isinstance(e, PublishStarted) for e in await client.publish(channel.key))
    (proto,) = node.ingest.publishers.values()
    publisher = Publisher(client, proto)
    await publisher.send_frames(4)
    await until(lambda: proto in node.ingest.poller)
    return publisher


async def test_media_arrives_through_the_poller_and_the_end_of_the_stream_is_noticed(
    node: Node, channel: service.CreatedChannel
) -> None:
    publisher = await polled(node, channel)
    for _ in range(5):
        await publisher.send_frames(2)
        await publisher.all_arrived()
    assert publisher.proto in node.ingest.poller

    publisher.client.close()  # FIN: only a read notices it
    await publisher.gone()
    assert publisher.proto.close_reason == "peer closed"
    assert publisher.proto not in node.ingest.poller


async def test_a_reset_is_noticed(node: Node, channel: service.CreatedChannel) -> None:
    publisher = await polled(node, channel)
    sock = publisher.client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    publisher.client.close()  # RST
    await publisher.gone()
    assert (publisher.proto.close_reason or "").startswith("connection error: ConnectionReset")


async def test_a_burst_too_big_for_a_round_goes_back_to_the_event_loop(
    node: Node, channel: service.CreatedChannel
) -> None:
    publisher = await polled(node, channel)
    await publisher.send_frames(120)  # 3 MB at once: more than a round takes
    await publisher.all_arrived()
    assert publisher.proto not in node.ingest.poller
    await publisher.send_frames(3)  # the event loop reads it now
    await publisher.all_arrived()
    publisher.client.close()


async def test_the_end_of_the_publish_gives_the_connection_back_to_the_event_loop(
    node: Node, channel: service.CreatedChannel
) -> None:
    publisher = await polled(node, channel)
    conn = publisher.client.conn
    assert conn is not None
    conn.unpublish()
    await publisher.client.send(conn.data_to_send())
    await until(lambda: not node.ingest.publishers)
    assert publisher.proto not in node.ingest.poller
    assert publisher.proto in node.ingest.connections  # connected: it may publish again
    publisher.client.close()
    await publisher.gone()


async def test_a_closing_connection_is_never_read_again(
    node: Node, channel: service.CreatedChannel
) -> None:
    """Its descriptor is closed soon after, and may be reused by another file."""
    publisher = await polled(node, channel)
    transport = publisher.proto.transport
    assert transport is not None
    fd = transport.get_extra_info("socket").fileno()
    await publisher.send_frames(1)
    transport.close()
    received = publisher.proto.conn.bytes_received
    assert publisher.proto.read_from(fd) == -1
    assert publisher.proto.conn.bytes_received == received
