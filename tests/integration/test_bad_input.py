"""Hostile and broken clients are cut off within their limits; good publishers never notice."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time

import pytest

from stream_sync.credentials import service
from stream_sync.node import Node
from stream_sync.rtmp import handshake
from stream_sync.state.interfaces import PublishEnded, PublishStarted
from tests.support import BusRecorder, RtmpTestClient, debian_ffmpeg, ffmpeg_command, run_process

HANDSHAKE_TIMEOUT = 1.0  # the node fixture's setting
SWEEP = 0.5


def fmt0(csid: int, type_id: int, length: int, msid: int = 0) -> bytes:
    """A type-0 chunk header with a 3-byte basic header (works for any csid >= 64)."""
    value = csid - 64
    return (
        bytes((1, value & 0xFF, value >> 8))
        + (0).to_bytes(3, "big")
        + length.to_bytes(3, "big")
        + bytes((type_id,))
        + struct.pack("<I", msid)
    )


async def garbage(port: int) -> float:
    client = await RtmpTestClient.open(port)
    began = time.monotonic()
    await client.send(b"\x00\xff" * 2000)
    await client.wait_closed(2)
    return time.monotonic() - began


async def http_request(port: int) -> float:
    client = await RtmpTestClient.open(port)
    began = time.monotonic()
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await client.wait_closed(2)
    return time.monotonic() - began


async def stalled_handshake(port: int) -> float:
    client = await RtmpTestClient.open(port)
    began = time.monotonic()
    await client.send(b"\x03" + bytes(700))  # C0 and half of C1, then nothing
    await client.wait_closed(HANDSHAKE_TIMEOUT + 2 * SWEEP + 1)
    return time.monotonic() - began


async def silent(port: int) -> float:
    client = await RtmpTestClient.open(port)
    began = time.monotonic()
    await client.wait_closed(HANDSHAKE_TIMEOUT + 2 * SWEEP + 1)
    return time.monotonic() - began


async def huge_message(port: int) -> float:
    client = await RtmpTestClient.open(port)
    await client.connect()
    began = time.monotonic()
    await client.send(fmt0(100, 9, 0xFFFFFF, msid=1) + bytes(64))  # claims 16 MiB
    await client.wait_closed(2)
    return time.monotonic() - began


async def many_chunk_streams(port: int) -> float:
    client = await RtmpTestClient.open(port)
    await client.connect()
    began = time.monotonic()
    headers = b"".join(fmt0(64 + n, 20, 0) for n in range(10_000))
    with contextlib.suppress(ConnectionError):  # the server may cut us off mid-write
        await client.send(headers)
    await client.wait_closed(2)
    return time.monotonic() - began


async def test_bad_clients_are_disconnected_while_a_publisher_streams_on(
    node: Node, channel: service.CreatedChannel, bus: BusRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    seconds = 4
    url = f"{node.rtmp_url}/{channel.key}"
    publisher = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=seconds))
    await bus.wait_for(PublishStarted)

    port = node.rtmp_port
    results = await asyncio.gather(
        garbage(port),
        http_request(port),
        stalled_handshake(port),
        silent(port),
        huge_message(port),
        many_chunk_streams(port),
    )
    garbage_s, http_s, stalled_s, silent_s, huge_s, streams_s = results
    assert garbage_s < 1.0
    assert http_s < 1.0
    assert HANDSHAKE_TIMEOUT <= stalled_s <= HANDSHAKE_TIMEOUT + 2 * SWEEP + 0.5
    assert HANDSHAKE_TIMEOUT <= silent_s <= HANDSHAKE_TIMEOUT + 2 * SWEEP + 0.5
    assert huge_s < 1.0
    assert streams_s < 1.0

    ended = await bus.wait_for(PublishEnded, timeout=20)
    _, stderr = await publisher.communicate()
    assert publisher.returncode == 0, stderr.decode()
    assert abs(ended.video_frames - seconds * 15) <= 1

    log = caplog.text
    assert "looks like an HTTP request" in log
    assert "handshake not completed within 1 s" in log
    assert "exceeds the limit" in log
    assert "more than 64 chunk streams" in log
    assert node.ingest.connections == set()


async def test_digest_handshake_answer_verifies(node: Node) -> None:
    """FFmpeg checks our S1/S2 when it plays; our own verifying client does the same."""
    client = await RtmpTestClient.open(node.rtmp_port)
    hello = handshake.client_hello(digest=True, epoch_ms=0, random_bytes=bytes)
    await client.send(hello.c0c1)
    reply = await client.reader.readexactly(1 + 2 * handshake.HANDSHAKE_SIZE)
    s1 = reply[1 : 1 + handshake.HANDSHAKE_SIZE]
    s2 = reply[1 + handshake.HANDSHAKE_SIZE :]
    assert hello.digest is not None
    assert handshake.verify_server_reply(s1, s2, hello.digest)
    client.close()


async def test_unknown_application_is_rejected_on_connect(node: Node) -> None:
    from stream_sync.rtmp.client import ConnectRefused

    client = await RtmpTestClient.open(node.rtmp_port)
    events = await client.connect(app="vod")
    refused = [e for e in events if isinstance(e, ConnectRefused)]
    assert refused
    assert refused[0].info["code"] == "NetConnection.Connect.Rejected"
    assert "Unknown application 'vod'" in refused[0].info["description"]
    await client.wait_closed(3)


async def test_a_key_pasted_into_the_server_url_stays_out_of_the_logs(
    node: Node, channel: service.CreatedChannel, caplog: pytest.LogCaptureFixture
) -> None:
    """OBS users paste the key into the server URL: the refusal names the app, keyless."""
    from stream_sync.rtmp.client import ConnectRefused

    caplog.set_level("INFO")
    client = await RtmpTestClient.open(node.rtmp_port)
    events = await client.connect(app=f"live/{channel.key}")  # in the tcUrl too
    refused = [e for e in events if isinstance(e, ConnectRefused)]
    assert refused
    shown = f"Unknown application 'live/ssk_{channel.key_id}_***'"
    assert shown in refused[0].info["description"]
    await client.wait_closed(3)
    assert "connect refused" in caplog.text
    assert channel.key[17:37] not in caplog.text
