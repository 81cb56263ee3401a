"""Publishers the poller does not read (RTMPS) are read in batches (SO_RCVLOWAT).

The sweep raises a flowing stream's receive low-water mark, so the kernel wakes the
server once per batch instead of once per frame; when the stream goes quiet the
mark drops and the bytes that waited below it are read at once.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from stream_sync.credentials import service
from stream_sync.ingest import batching, polling
from stream_sync.ingest.protocol import RtmpProtocol
from stream_sync.node import Node
from stream_sync.rtmp.client import PublishStarted
from tests.support import RtmpTestClient

pytestmark = pytest.mark.skipif(not batching.SUPPORTED, reason="SO_RCVLOWAT batching is Linux's")

FRAME = bytes([0x27, 0x01, 0, 0, 0]) + bytes(25_000)  # an AVC inter frame, 25 kB
TAIL = bytes([0x27, 0x01, 0, 0, 0]) + bytes(100)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll: the kernel's delivery and the sweep's tuning announce themselves nowhere."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - nothing to await: the kernel says nothing
            await asyncio.sleep(0.02)


def mark_of(proto: RtmpProtocol) -> int:
    assert proto.transport is not None
    sock = proto.transport.get_extra_info("socket")
    value: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)
    return value


async def test_a_flowing_stream_is_batched_and_its_tail_still_arrives(
    node: Node, channel: service.CreatedChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(polling, "SUPPORTED", False)  # as for RTMPS: the loop reads
    client = await RtmpTestClient.open(node.rtmp_port)
    await client.connect()
    assert any(isinstance(e, PublishStarted) for e in await client.publish(channel.key))
    assert client.conn is not None
    (proto,) = node.ingest.publishers.values()
    counters = proto.conn.counters

    for i in range(40):  # 1 MB at once: far above any mark
        client.conn.send_video(i * 33, FRAME)
    await client.send(client.conn.data_to_send())
    await until(lambda: counters.video_frames == 40)
    await until(lambda: proto.read_mark > batching.DEFAULT_MARK)  # the next sweep's work
    assert mark_of(proto) == proto.read_mark == batching.MAX_MARK

    client.conn.send_video(40 * 33, TAIL)  # far below the mark, and then nothing
    await client.send(client.conn.data_to_send())
    await until(lambda: counters.video_frames == 41, timeout=3.0)
    assert mark_of(proto) == proto.read_mark == batching.DEFAULT_MARK
    client.close()
