"""Shared helpers for the RTMP core tests.

- `h()` writes wire bytes as spaced hex; `pieces()` splits input whole, byte by byte or
  at seeded random points.
- `Decoder` turns one direction's bytes back into messages with the core's own
  ChunkReader (tests use it to read what the server sent).
- `Peer` scripts a client's bytes with ChunkWriter and AMF0, for inputs that
  ClientConnection would never produce.
- `Server` wraps a ServerConnection: it feeds input, answers decisions (or leaves that
  to the test), records events and decodes what the server sent.
- `Pair` pumps bytes between a ClientConnection and a Server.
- `Capture` loads a recorded session from tests/data/captures.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_sync.rtmp import amf0, handshake
from stream_sync.rtmp.chunk import ChunkReader, ChunkWriter
from stream_sync.rtmp.client import ClientConnection, ClientEvent
from stream_sync.rtmp.config import RtmpConfig
from stream_sync.rtmp.connection import ServerConnection
from stream_sync.rtmp.events import ConnectRequested, Event, PublishRequested
from stream_sync.rtmp.messages import StatusCode

T0 = 1000.0  # the clock every test starts at
CONFIG = RtmpConfig()
HANDSHAKE = 1 + 2 * handshake.HANDSHAKE_SIZE  # C0+C1+C2 or S0+S1+S2: 3073 bytes
CAPTURES = Path(__file__).resolve().parents[2] / "data" / "captures"
SPLITS = ("whole", "bytes", "random")


def h(text: str) -> bytes:
    """Hex with any whitespace: h("03 000000 000004 14")."""
    return bytes.fromhex(" ".join(text.split()))


def seeded_bytes(seed: int) -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom."""
    rng = random.Random(seed)
    return rng.randbytes


def pieces(data: bytes, how: str | random.Random, seed: int = 0) -> list[bytes]:
    """Split data: "whole", "bytes" (one byte each) or "random" (seeded, mostly small)."""
    if how == "whole":
        return [data] if data else []
    if how == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    rng = how if isinstance(how, random.Random) else random.Random(seed)
    out, pos = [], 0
    while pos < len(data):
        size = rng.choice((1, 2, 3, rng.randint(1, 16), rng.randint(1, 300), rng.randint(1, 5000)))
        out.append(data[pos : pos + size])
        pos += size
    return out


# Reading messages --------------------------------------------------------------------


@dataclass(frozen=True)
class Msg:
    type_id: int
    msid: int
    timestamp: int
    body: bytes

    @property
    def values(self) -> list[Any]:
        """The AMF0 values of a command or data message (type 15/17 skip their 0x00 byte)."""
        return amf0.decode_all(self.body, 1 if self.type_id in (15, 17) else 0)

    @property
    def name(self) -> str:
        return self.values[0]

    @property
    def info(self) -> dict[str, Any]:
        """The info object of an onStatus/_result/_error command."""
        return self.values[3]

    @property
    def u32(self) -> int:
        return int.from_bytes(self.body[:4], "big")


class Decoder:
    """One direction's bytes back into messages, applying Set Chunk Size and Abort."""

    def __init__(self, *, skip: int = 0, chunk_size: int = 128, media_msid: int = 1) -> None:
        self.messages: list[Msg] = []
        self.skipped = b""
        self._skip = skip
        self.reader = ChunkReader(
            self._on_message,
            buffer_size=1 << 16,
            max_chunk_streams=65600,
            max_message_size=0xFFFFFF,
            max_control_size=0xFFFFFF,
        )
        self.reader.chunk_size = chunk_size
        self.reader.collect_media = True
        self.reader.publishing_msid = media_msid

    def _on_message(self, type_id: int, msid: int, timestamp: int, body: bytearray) -> None:
        if type_id == 1:
            self.reader.chunk_size = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
        elif type_id == 2:
            self.reader.abort(int.from_bytes(body[:4], "big"))
        self.messages.append(Msg(type_id, msid, timestamp, bytes(body)))

    def feed(self, data: bytes) -> list[Msg]:
        start = len(self.messages)
        view = memoryview(data)
        while view:
            space = self.reader.get_buffer()
            n = min(len(space), len(view))
            space[:n] = view[:n]
            view = view[n:]
            self.reader.end += n
            if self._skip:
                block = self.reader.take(self._skip)
                if block is None:
                    continue
                self.skipped, self._skip = block, 0
            self.reader.parse()
        return self.messages[start:]


def decode(data: bytes, **kwargs: Any) -> list[Msg]:
    return Decoder(**kwargs).feed(data)


# Writing a client's bytes by hand ----------------------------------------------------


class Peer:
    """A scripted client: raw bytes from ChunkWriter and the AMF0 encoder."""

    def __init__(self, seed: int = 7) -> None:
        self.writer = ChunkWriter()
        self._random = seeded_bytes(seed)

    def handshake(self, c0: int = 3) -> bytes:
        """A plain C0+C1 and a C2 (the server never requires C2 to echo S1)."""
        return bytes((c0,)) + bytes(8) + self._random(1528) + self._random(1536)

    def message(self, csid: int, type_id: int, msid: int, timestamp: int, body: bytes) -> bytes:
        out = bytearray()
        self.writer.write(out, csid, type_id, msid, timestamp, body)
        return bytes(out)

    def command(self, name: str, txn: float, *args: Any, msid: int = 0, csid: int = 3) -> bytes:
        return self.message(csid, 20, msid, 0, amf0.encode(name, float(txn), *args))

    def connect(self, txn: float = 1, **properties: Any) -> bytes:
        props = {"app": "live", "type": "nonprivate", "tcUrl": "rtmp://127.0.0.1/live"}
        return self.command("connect", txn, {**props, **properties})

    def set_chunk_size(self, size: int) -> bytes:
        data = self.message(2, 1, 0, 0, size.to_bytes(4, "big"))
        self.writer.chunk_size = size
        return data

    def video(self, timestamp: int, body: bytes, msid: int = 1) -> bytes:
        return self.message(6, 9, msid, timestamp, body)

    def audio(self, timestamp: int, body: bytes, msid: int = 1) -> bytes:
        return self.message(4, 8, msid, timestamp, body)

    def metadata(self, properties: dict[str, Any], timestamp: int = 0, msid: int = 1) -> bytes:
        body = amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(properties))
        return self.message(4, 18, msid, timestamp, body)

    def publish_session(self, name: str = "test-key") -> bytes:
        """Handshake, connect, createStream (stream 1) and publish, like FFmpeg."""
        return (
            self.handshake()
            + self.connect()
            + self.command("createStream", 2, None)
            + self.command("publish", 3, None, name, "live", msid=1, csid=8)
        )


# The server under test ---------------------------------------------------------------


class Server:
    """A ServerConnection with its events recorded and its output decoded."""

    def __init__(
        self,
        config: RtmpConfig = CONFIG,
        *,
        auto: bool = True,
        collect_media: bool = False,
        now: float = T0,
        seed: int = 0,
    ) -> None:
        self.conn = ServerConnection(config, now=now, random_bytes=seeded_bytes(seed))
        self.conn.collect_media = collect_media
        self.auto = auto  # accept every connect and publish as it appears
        self.now = now
        self.events: list[Event] = []
        self.sent: list[Msg] = []
        self.out = Decoder(skip=HANDSHAKE)
        self._seen = 0

    def feed(
        self, data: bytes, split: str | random.Random = "whole", now: float | None = None
    ) -> list[Event]:
        now = self.now if now is None else now
        new: list[Event] = []
        for piece in pieces(data, split):
            new += self.absorb(self.conn.receive_data(piece, now))
        return new

    def absorb(self, events: list[Event]) -> list[Event]:
        queue, done = list(events), []
        while queue:
            event = queue.pop(0)
            done.append(event)
            self.events.append(event)
            if self.auto and isinstance(event, ConnectRequested):
                queue += self.conn.accept_connect()
            elif self.auto and isinstance(event, PublishRequested):
                queue += self.conn.accept_publish(event.stream_id)
        return done

    def accept_connect(self, **properties: Any) -> list[Event]:
        return self.absorb(self.conn.accept_connect(**properties))

    def reject_connect(self, description: str) -> list[Event]:
        return self.absorb(self.conn.reject_connect(description))

    def accept_publish(self, stream_id: int = 1) -> list[Event]:
        return self.absorb(self.conn.accept_publish(stream_id))

    def reject_publish(
        self, stream_id: int, description: str, code: str = StatusCode.PUBLISH_BAD_NAME
    ) -> list[Event]:
        return self.absorb(self.conn.reject_publish(stream_id, description, code))

    def flush(self) -> bytes:
        """Everything the server wants to send; also decoded into self.sent."""
        data = self.conn.data_to_send()
        self.sent += self.out.feed(data)
        return data

    def replies(self) -> list[Msg]:
        """Messages the server sent since the last call."""
        self.flush()
        new, self._seen = self.sent[self._seen :], len(self.sent)
        return new

    def of(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


def publishing(
    config: RtmpConfig = CONFIG, *, collect_media: bool = False, name: str = "test-key"
) -> tuple[Server, Peer]:
    """A server with stream 1 publishing (decisions accepted) and its output drained."""
    server, peer = Server(config, collect_media=collect_media), Peer()
    server.feed(peer.publish_session(name))
    assert server.conn.publishing_stream_id == 1
    server.replies()
    return server, peer


# Client and server together ----------------------------------------------------------


class Pair:
    """A ClientConnection and a Server in memory; pump() moves bytes until both are quiet."""

    def __init__(
        self,
        config: RtmpConfig = CONFIG,
        *,
        auto: bool = False,
        split: str = "whole",
        seed: int = 0,
        collect_media: bool = False,
        **client_options: Any,
    ) -> None:
        self.server = Server(config, auto=auto, collect_media=collect_media, seed=seed)
        options = {"digest": False, "random_bytes": seeded_bytes(seed + 1), **client_options}
        self.client = ClientConnection(
            app="live", tc_url="rtmp://127.0.0.1/live", now=T0, **options
        )
        self.client_events: list[ClientEvent] = []
        self.upstream = bytearray()  # every byte the client sent
        self._split: str | random.Random = random.Random(seed) if split == "random" else split

    def pump(self) -> None:
        while True:
            upstream = self.client.data_to_send()
            self.upstream += upstream
            if upstream:
                self.server.feed(upstream, self._split)
            downstream = self.server.flush()
            for piece in pieces(downstream, self._split):
                self.client_events += self.client.receive_data(piece)
            if not upstream and not downstream:
                return

    def client_of(self, kind: type) -> list[Any]:
        return [event for event in self.client_events if isinstance(event, kind)]


# Captures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Capture:
    name: str
    c2s: bytes
    s2c: bytes
    reads: list[tuple[str, int, int, float]]

    @classmethod
    def load(cls, name: str) -> Capture:
        reads = json.loads((CAPTURES / f"{name}.reads.json").read_text())["reads"]
        return cls(
            name,
            (CAPTURES / f"{name}.c2s.bin").read_bytes(),
            (CAPTURES / f"{name}.s2c.bin").read_bytes(),
            [tuple(read) for read in reads],
        )

    def recorded(self, direction: str = "c2s") -> list[tuple[bytes, float]]:
        """The bytes of one direction in the pieces the recording proxy read them."""
        data = self.c2s if direction == "c2s" else self.s2c
        out, expected_offset = [], 0
        for where, offset, length, t in self.reads:
            if where == direction:
                assert offset == expected_offset, "reads.json must tile the capture"
                out.append((data[offset : offset + length], t))
                expected_offset = offset + length
        assert expected_offset == len(data)
        return out


def capture_names() -> list[str]:
    return sorted(path.name[: -len(".c2s.bin")] for path in CAPTURES.glob("*.c2s.bin"))
