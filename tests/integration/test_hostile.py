"""Hostile values in every field a client controls, against a live node.

Each case is a whole connection from its own loopback address (so the abuse
limits of one case never colour the next): it must end with the server closing
the connection and one log line giving the reason, while no log line is split
(CR/LF from the peer would forge log entries), no file appears or changes, and
no connection ever holds more than the per-connection bound:

    read buffer + backlog + partial-message budget
    = 2 x read_buffer_size + max_message_size + max_control_size
    = 2 x 64 KiB + 8 MiB + 64 KiB = 8.25 MiB with the defaults,

of which a peer that has not published can only fill the read buffer, the
backlog and commands (each at most max_control_size).
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_sync.node import Node
from stream_sync.rtmp import amf0
from stream_sync.rtmp.connection import ServerConnection
from stream_sync.settings import Settings
from tests.integration.conftest import node_settings, running_node
from tests.unit.rtmp.wire import Peer

CLOSE_WITHIN = 3.0  # refusals linger 2 s for the peer to read them; errors close at once
SHELL = "$(touch /tmp/pwned);`id`|rm -rf /&&echo>x"
FORGED = "live\r\n2026-12-06T00:00:00.000Z INFO  stream_sync.ingest: forged line"


def nested(depth: int) -> bytes:
    """A connect command whose command object nests `depth` objects: {"a": {"a": ...}}."""
    head = amf0.encode("connect", 1.0)
    return head + b"\x03\x00\x01a" * depth + b"\x05"


def chunk(csid: int, type_id: int, body: bytes, length: int | None = None) -> bytes:
    """One type-0 chunk with a 3-byte basic header; `length` may lie about the body."""
    value = csid - 64
    claimed = len(body) if length is None else length
    return (
        bytes((1, value & 0xFF, value >> 8, 0, 0, 0))
        + claimed.to_bytes(3, "big")
        + bytes((type_id,))
        + struct.pack("<I", 0)
        + body[:128]
    )


def connect_with(**properties: Any) -> Callable[[Peer], bytes]:
    return lambda peer: peer.handshake() + peer.connect(**properties)


def publish_as(name: str) -> Callable[[Peer], bytes]:
    return lambda peer: peer.publish_session(name)


def raw(after_handshake: Callable[[Peer], bytes]) -> Callable[[Peer], bytes]:
    return lambda peer: peer.handshake() + after_handshake(peer)


CASES: dict[str, tuple[Callable[[Peer], bytes], str]] = {
    "app with ../": (connect_with(app="../../../etc/passwd"), "connect refused"),
    "app with CR/LF": (connect_with(app=FORGED), "connect refused"),
    "app with shell metacharacters": (connect_with(app=SHELL), "connect refused"),
    "app of 64 KiB": (connect_with(app="a" * 65536), "exceeds the limit of 65536"),
    "tcUrl with CR/LF and a query": (
        lambda peer: (
            connect_with(tcUrl=f"rtmp://x/live?k=1\r\n{SHELL}")(peer)
            + peer.command("createStream", 2, None)
            + peer.command("publish", 3, None, "../../../x", "live", msid=1, csid=8)
        ),
        "publish refused (malformed_key)",
    ),
    "stream name with ../": (publish_as("../../../etc/shadow"), "publish refused (malformed_key)"),
    "stream name with CR/LF": (publish_as(FORGED), "publish refused (malformed_key)"),
    "stream name with shell metacharacters": (
        publish_as(SHELL),
        "publish refused (malformed_key)",
    ),
    "stream name with a query string": (
        publish_as(f"key?x=../..&y=\r\n{SHELL}"),
        "publish refused (malformed_key)",
    ),
    "stream name of 64 KiB": (publish_as("s" * 65000), "publish refused (malformed_key)"),
    "AMF nested 2,000 deep": (
        raw(lambda peer: peer.message(3, 20, 0, 0, nested(2000))),
        "nested deeper than 16",
    ),
    "Set Chunk Size 0": (raw(lambda peer: peer.message(2, 1, 0, 0, bytes(4))), "chunk size 0"),
    "Set Chunk Size 1": (
        raw(lambda peer: peer.message(2, 1, 0, 0, (1).to_bytes(4, "big"))),
        "chunk size 1 outside",
    ),
    "Set Chunk Size 2^31-1": (
        raw(lambda peer: peer.message(2, 1, 0, 0, (2**31 - 1).to_bytes(4, "big"))),
        "chunk size 2147483647 outside",
    ),
    "message length 0xFFFFFF": (
        raw(lambda _: chunk(100, 20, bytes(128), length=0xFFFFFF)),
        "16777215 bytes exceeds the limit",
    ),
    "65,599 chunk stream ids": (
        raw(lambda _: b"".join(chunk(csid, 20, b"", 0) for csid in range(64, 65600))),
        "more than 64 chunk streams",
    ),
}


@pytest.fixture
def deepest(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The most bytes any connection held after any read (ServerConnection.buffered_bytes)."""
    most = [0]
    original = ServerConnection.buffer_updated

    def measured(self: ServerConnection, nbytes: int, now: float) -> list[Any]:
        try:
            return original(self, nbytes, now)
        finally:
            most[0] = max(most[0], self.buffered_bytes())

    monkeypatch.setattr(ServerConnection, "buffer_updated", measured)
    return most


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root but the database, with its size and modification time."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file() and ".db" not in path.name
    }


def shell_ran() -> bool:
    return Path("/tmp/pwned").exists()


async def attack(port: int, source: str, data: bytes) -> tuple[float, bytes]:
    """Send data from source; the seconds until the server closed, and what it sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    began = time.monotonic()
    received = bytearray()
    try:
        writer.write(data)
        async with asyncio.timeout(CLOSE_WITHIN + 2):
            while chunk_ := await reader.read(65536):
                received += chunk_
    except ConnectionError:
        pass  # a reset is a close too
    finally:
        writer.close()
    return time.monotonic() - began, bytes(received)


def bound(settings: Settings) -> int:
    return 2 * settings.read_buffer_size + settings.max_message_size + settings.max_control_size


async def test_hostile_fields_get_a_clean_close_and_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, deepest: list[int]
) -> None:
    caplog.set_level("INFO")
    settings = node_settings(tmp_path / "data", failed_publish_limit=1000)
    cwd_before = set(os.listdir())
    async with running_node(settings) as node:
        files_before = tree(tmp_path)
        await run_cases(node, caplog)
        assert tree(tmp_path) == files_before
    assert set(os.listdir()) == cwd_before
    assert not shell_ran()
    assert 0 < deepest[0] <= bound(settings)

    lines = [record.getMessage() for record in caplog.records]
    split = [line for line in lines if "\n" in line or "\r" in line]
    assert split == []
    assert not any("forged line" in line and "\\r\\n" not in line for line in lines)


async def run_cases(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    for number, (name, (build, reason)) in enumerate(CASES.items(), start=2):
        source = f"127.0.1.{number}"
        waited, _ = await attack(node.rtmp_port, source, build(Peer()))
        assert waited < CLOSE_WITHIN, name
        await asyncio.wait_for(node.ingest.wait_idle(), CLOSE_WITHIN)  # its close is logged
        closed = [
            r.getMessage()
            for r in caplog.records
            if re.search(rf"peer={re.escape(source)}:\d+ closed reason=", r.getMessage())
        ]
        assert len(closed) == 1, name
        assert reason in closed[0], f"{name}: {closed[0]}"
