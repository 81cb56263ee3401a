"""Fuzz targets for the sans-IO RTMP core: bytes in, and only the peer's error out.

Each target takes one input and returns quietly, or raises what the fuzzer reports as
a crash. As in h11's harness, the one invariant is that any input either parses or
raises the error meant for a misbehaving peer (`ProtocolError`; `CodecError` for
codec records); the connection targets also check after every read that what the
connection holds stays within its `RtmpConfig`, and that the clock always ends it.

The connection targets drive `ServerConnection` the way `ingest/protocol.py` and the
ingest sweep do: reads into `get_buffer()`, `buffer_updated()`, the application's
decisions, `data_to_send()`, `handle_timer()` at `deadline()`. Their inputs start with
a 3-byte header so that the fuzzer also mutates those choices:

    byte 0  bit 0: small limits          bit 1: collect_media
            bit 2: session target only: the digest handshake prefix, else the plain one
            bit 3: feed through receive_data() (copies; keeps a backlog while paused)
    byte 1  bits 0-1: 3 refuses connect  bits 2-3: publish decision (`_decide_publish`)
            bits 4-5: reads before the publish decision
    byte 2  read sizes and clock steps: 0 reads whole buffers at one instant,
            anything else seeds a generator of mostly small reads
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream_sync.rtmp import amf0, flv
from stream_sync.rtmp.codecs import CodecError, describe_audio, describe_video
from stream_sync.rtmp.config import RtmpConfig
from stream_sync.rtmp.connection import FIRST_BUFFER_SIZE, ServerConnection
from stream_sync.rtmp.errors import ProtocolError
from stream_sync.rtmp.events import CodecConfigured, ConnectRequested, Event, PublishRequested

CAPTURES = Path(__file__).resolve().parents[1] / "data" / "captures"
HANDSHAKE = 1 + 2 * 1536  # C0+C1+C2
HEADER = 3
T0 = 1000.0
CONFIGS = (
    RtmpConfig(),
    # Limits an input of a few KiB can reach: every bound is exercised, not just stated.
    RtmpConfig(
        read_buffer_size=4096,
        max_control_size=1024,
        max_message_size=4096,
        max_chunk_streams=8,
        max_streams=2,
    ),
)
MEDIA_TYPES = (8, 9, 22)  # audio, video, aggregate: limited by max_message_size
# A reply is small next to what asked for it; more than this per byte received is a runaway.
OUTPUT_PER_BYTE = 32
OUTPUT_SLACK = 16 * 1024


def _handshake(capture: str) -> bytes:
    return (CAPTURES / f"{capture}.c2s.bin").read_bytes()[:HANDSHAKE]


# A plain C1 (OBS, librtmp) and a digest C1 (FFmpeg's Flash-9 handshake).
PREFIXES = (_handshake("obs29-h264-aac"), _handshake("ff9-h264-aac"))


class Dice:
    """A tiny deterministic generator: read sizes and clock steps from one seed byte."""

    def __init__(self, seed: int) -> None:
        self.whole = seed == 0
        self.state = seed * 2654435761 & 0x7FFFFFFF

    def _next(self) -> int:
        self.state = (self.state * 1103515245 + 12345) & 0x7FFFFFFF
        return self.state >> 4

    def read_size(self) -> int:
        if self.whole:
            return 1 << 30
        r = self._next()
        pick = r & 7
        if pick < 3:
            return pick + 1
        if pick == 3:
            return 1 + (r >> 3) % 16
        if pick == 4:
            return 1 + (r >> 3) % 300
        if pick == 5:
            return 1 + (r >> 3) % 5000
        return 1 << 30  # whatever the buffer holds

    def clock_step(self) -> float:
        if self.whole:
            return 0.0
        r = self._next() & 63
        if r == 0:
            return 40.0  # past every timeout
        if r < 4:
            return float(r)
        return 0.001


class Driver:
    """One connection driven as the ingest server drives it, checked after every step."""

    def __init__(self, data: bytes, prefix: bytes) -> None:
        flags, decisions, seed = (data[:HEADER] + bytes(HEADER))[:HEADER]
        self.config = CONFIGS[flags & 1]
        self.stream = prefix + data[HEADER:]
        self.dice = Dice(seed)
        self.now = T0
        self.conn = ServerConnection(self.config, now=T0, random_bytes=bytes)
        self.conn.collect_media = bool(flags & 2)
        self.copying = bool(flags & 8)  # receive_data(), which keeps a backlog while paused
        self.refuse_connect = decisions & 3 == 3
        self.publish_policy = (decisions >> 2) & 3
        self.publish_wait = (decisions >> 4) & 3
        self.pending: int | None = None  # stream id of a publish awaiting our decision
        self.wait = 0  # reads left before deciding it
        self.end_after: int | None = None  # reads left before we end an accepted publish
        self.sent = 0
        self.accepted = False  # a publish was accepted: the read buffer may be full size

    def run(self) -> None:
        conn, stream = self.conn, self.stream
        pos = 0
        try:
            while pos < len(stream):
                self.sweep()
                space = conn.get_buffer()
                paused = not space and not self.copying
                if self.pending is not None and (not self.wait or paused):
                    self.decide()  # the admission task finished, or reading was paused
                    continue
                if not space and self.pending is None:
                    raise AssertionError("an empty read buffer with no decision pending")
                n = min(self.dice.read_size(), len(stream) - pos)
                self.now += self.dice.clock_step()
                if self.copying:
                    self.step(conn.receive_data, stream[pos : pos + n], self.now)
                else:
                    n = min(n, len(space))
                    space[:n] = stream[pos : pos + n]
                    self.step(conn.buffer_updated, n, self.now)
                pos += n
                if self.pending is not None and self.wait:
                    self.wait -= 1
                if self.end_after is not None and self.pending is None:
                    self.end_after -= 1
                    if self.end_after < 0 and not conn.closing:
                        self.end_after = None
                        conn.end_publish("Stopped by the operator.")
            if self.pending is not None:
                self.decide()
            # However the input ended, the clock must end the connection.
            self.now = max(self.now, conn.deadline())
            conn.handle_timer(self.now)
        except ProtocolError:
            return
        raise AssertionError("handle_timer() did not raise at deadline()")

    def sweep(self) -> None:
        """The ingest sweep: no timeout before deadline(), one at it."""
        conn = self.conn
        try:
            conn.handle_timer(min(self.now, math.nextafter(conn.deadline(), 0)))
        except ProtocolError as exc:
            raise AssertionError("a timeout before deadline()") from exc
        if self.now >= conn.deadline():
            conn.handle_timer(self.now)
            raise AssertionError("handle_timer() did not raise at deadline()")

    def step(self, call: Callable[..., list[Event]], *args: Any) -> None:
        events = list(call(*args))
        while events:
            event = events.pop(0)
            if isinstance(event, ConnectRequested):
                if self.refuse_connect:
                    self.conn.reject_connect("Refused by the fuzzer.")
                else:
                    events += self.conn.accept_connect()
            elif isinstance(event, PublishRequested):
                assert self.pending is None, "a second publish while one is undecided"
                self.pending, self.wait = event.stream_id, self.publish_wait
            elif isinstance(event, CodecConfigured):
                describe_packet(event.media, event.packet)
        self.sent += len(self.conn.data_to_send())
        received = self.conn.bytes_received
        assert self.sent <= OUTPUT_PER_BYTE * received + OUTPUT_SLACK, "runaway output"
        check_bounded(self.conn, accepted=self.accepted)

    def decide(self) -> None:
        """The admission task's answer: 0 accept, 1 accept then end, 2 redirect, 3 refuse."""
        conn, stream_id, policy = self.conn, self.pending, self.publish_policy
        assert stream_id is not None
        assert conn.awaiting_decision, "a publish is pending but the connection is not paused"
        self.pending = None
        if policy <= 1:
            self.accepted = True
            self.step(conn.accept_publish, stream_id)
            if policy == 1:
                self.end_after = self.publish_wait
        elif policy == 2:
            conn.request_reconnect("rtmp://elsewhere.example/live", "Moved.")
            self.step(conn.reject_publish, stream_id, "Moved.")
        else:
            self.step(conn.reject_publish, stream_id, "Unknown stream key.")


def check_bounded(conn: ServerConnection, *, accepted: bool) -> None:
    """What a connection holds stays within its configured limits, whatever the peer sent."""
    config = conn.config
    reader = conn._reader
    # The full read buffer only once a publish was accepted (FIRST_BUFFER_SIZE before).
    size = config.read_buffer_size if accepted else FIRST_BUFFER_SIZE
    assert len(reader.buf) <= size, "the read buffer grew"
    assert 0 <= reader.start <= reader.end <= len(reader.buf)
    assert len(conn._backlog) <= config.read_buffer_size, "the backlog outgrew its limit"
    assert len(reader.streams) <= config.max_chunk_streams, "too many chunk streams"
    assert len(conn.streams) <= config.max_streams, "too many message streams"
    held = 0
    for cs in reader.streams.values():
        if cs.body is not None:
            media = cs.type_id in MEDIA_TYPES
            limit = config.max_message_size if media else config.max_control_size
            assert len(cs.body) <= cs.length <= limit, "a partial message beyond its limit"
            held += len(cs.body)
    # One media and one control message's worth for the whole connection.
    assert held <= config.max_message_size + config.max_control_size, "partial messages"


def describe_packet(media: str, packet: flv.MediaPacket) -> None:
    """What the ingest does with a codec configuration: only CodecError may come out."""
    try:
        if packet.kind is flv.PacketKind.MULTICHANNEL_CONFIG:
            flv.parse_multichannel_config(packet.body)
        elif media == "video":
            describe_video(packet.codec, packet.body)
        else:
            describe_audio(packet.codec, packet.body)
    except (CodecError, ProtocolError):
        pass


# The targets -------------------------------------------------------------------------


def server(data: bytes) -> None:
    """(a) A connection from its first byte: the handshake is fuzzed too."""
    Driver(data, b"").run()


def session(data: bytes) -> None:
    """(b) A connection after a real client's handshake: chunks, messages, AMF0, media."""
    Driver(data, PREFIXES[(data[0] >> 2) & 1 if data else 0]).run()


def amf0_values(data: bytes) -> None:
    """(c) AMF0 decoding; what decodes encodes again to the same values."""
    try:
        values = amf0.decode_all(data)
    except ProtocolError:
        return
    again = amf0.decode_all(amf0.encode(*values))
    assert same(values, again), "AMF0 values changed in a round trip"


def media(data: bytes) -> None:
    """(d) FLV audio/video tag headers and the codec records inside sequence starts.

    The first byte picks video (even) or audio (odd); the rest is the message payload.
    """
    if not data:
        return
    payload = data[1:]
    video = not data[0] & 1
    if payload:
        b1 = payload[1] if len(payload) > 1 else -1
        action = flv.classify_video(payload[0], b1) if video else flv.classify_audio(payload[0], b1)
        assert action in (flv.IGNORE, flv.FRAME, flv.KEYFRAME, flv.COLLECT)
    try:
        packets = flv.parse_video(payload) if video else flv.parse_audio(payload)
    except ProtocolError:
        return
    for packet in packets:
        if packet.kind in (flv.PacketKind.SEQUENCE_START, flv.PacketKind.MULTICHANNEL_CONFIG):
            describe_packet("video" if video else "audio", packet)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "server": server,
    "session": session,
    "amf0": amf0_values,
    "media": media,
}


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down; NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, amf0.TypedObject):
        return a.class_name == b.class_name and same(a.properties, b.properties)
    if isinstance(a, amf0.Date):
        return same(a.milliseconds, b.milliseconds) and a.timezone == b.timezone
    return bool(a == b)
