"""The chunk stream, byte for byte.

Two tables of wire bytes drive everything here, in the style of gortmplib's message
reader tests. CHUNKS: (name, messages, wire bytes) — read by ChunkReader and by a
publishing ServerConnection, written by ChunkWriter where the writer makes the same
header choices, and mutated as fuzz seeds. CONTROL: protocol control traffic after a
publish has started, with what the server must deliver, answer or refuse. Every case is
fed whole, byte by byte and in seeded random splits, with identical outcomes.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_sync.rtmp.chunk import ChunkReader, ChunkWriter, basic_header
from stream_sync.rtmp.config import RtmpConfig
from stream_sync.rtmp.connection import FIRST_BUFFER_SIZE
from stream_sync.rtmp.errors import ProtocolError
from stream_sync.rtmp.events import KeyframeCaptured, MediaReceived

from .wire import CONFIG, SPLITS, Decoder, Msg, Peer, Server, h, pieces, publishing


def fill(size: int, seed: int) -> bytes:
    return bytes((seed + 31 * i) % 251 for i in range(size))


def key(size: int, seed: int = 1) -> bytes:
    """A legacy H.264 keyframe (0x17, AVCPacketType 1, CTS 0) of size bytes."""
    return h("17 01 000000") + fill(size - 5, seed)


def inter(size: int, seed: int = 2) -> bytes:
    return h("27 01 000000") + fill(size - 5, seed)


def aac(size: int, seed: int = 3) -> bytes:
    return h("af 01") + fill(size - 2, seed)


V10, A8 = key(10), aac(8)
I12A, I12B, I12C = inter(12, 4), inter(12, 5), inter(12, 6)
P200, P300, Q300, A200 = key(200, 7), key(300, 8), inter(300, 9), aac(200, 10)


@dataclass(frozen=True)
class Case:
    name: str
    messages: tuple[tuple[int, int, int, int, bytes], ...]  # csid, type, msid, timestamp, body
    wire: bytes
    writable: bool = True  # ChunkWriter produces exactly these bytes for these messages

    def __str__(self) -> str:
        return self.name

    @property
    def expected(self) -> list[Msg]:
        return [Msg(type_id, msid, ts, body) for _, type_id, msid, ts, body in self.messages]

    @property
    def media_only(self) -> bool:
        return all(m[1] in (8, 9) and m[2] == 1 for m in self.messages)

    @property
    def drops(self) -> bool:
        """Some bytes belong to a message that never completes."""
        return "drops" in self.name


CHUNKS = [
    Case(
        "type 0, 1-byte basic header, lowest csid 2",
        ((2, 9, 1, 100, V10),),
        h("02 000064 00000a 09 01000000") + V10,
    ),
    Case(
        "1-byte basic header, highest csid 63",
        ((63, 8, 1, 200, A8),),
        h("3f 0000c8 000008 08 01000000") + A8,
    ),
    Case(
        "2-byte basic header, lowest csid 64",
        ((64, 9, 1, 300, V10),),
        h("00 00 00012c 00000a 09 01000000") + V10,
    ),
    Case(
        "2-byte basic header, highest csid 319",
        ((319, 9, 1, 400, V10),),
        h("00 ff 000190 00000a 09 01000000") + V10,
    ),
    Case(
        "3-byte basic header, lowest csid 320",
        ((320, 9, 1, 500, V10),),
        h("01 00 01 0001f4 00000a 09 01000000") + V10,
    ),
    Case(
        "3-byte basic header, highest csid 65599, on the continuation too",
        ((65599, 9, 1, 600, P200),),
        h("01 ff ff 000258 0000c8 09 01000000") + P200[:128] + h("c1 ff ff") + P200[128:],
    ),
    Case(
        "header types 0, 1, 2 and 3; the type-3 message reuses the delta",
        ((6, 9, 1, 1000, V10), (6, 9, 1, 1040, I12A), (6, 9, 1, 1060, I12B), (6, 9, 1, 1080, I12C)),
        h("06 0003e8 00000a 09 01000000")
        + V10
        + h("46 000028 00000c 09")
        + I12A
        + h("86 000014")
        + I12B
        + h("c6")
        + I12C,
    ),
    Case(
        "type-3 continuation chunks at the default chunk size of 128",
        ((6, 9, 1, 0, P300),),
        h("06 000000 00012c 09 01000000")
        + P300[:128]
        + h("c6")
        + P300[128:256]
        + h("c6")
        + P300[256:],
    ),
    Case(
        "extended timestamp on type 0, repeated on the continuation",
        ((6, 9, 1, 0x01000000, P200),),
        h("06 ffffff 0000c8 09 01000000 01000000") + P200[:128] + h("c6 01000000") + P200[128:],
    ),
    Case(
        "extended timestamp on type 0, not repeated on the continuation",
        ((6, 9, 1, 0x01000000, P200),),
        h("06 ffffff 0000c8 09 01000000 01000000") + P200[:128] + h("c6") + P200[128:],
        writable=False,
    ),
    Case(
        "timestamp 0xffffff itself takes the extended field",
        ((6, 9, 1, 0xFFFFFF, V10),),
        h("06 ffffff 00000a 09 01000000 00ffffff") + V10,
    ),
    Case(
        "extended delta on type 1, repeated on the continuation",
        ((6, 9, 1, 10, V10), (6, 9, 1, 10 + 0x01000000, P200)),
        h("06 00000a 00000a 09 01000000")
        + V10
        + h("46 ffffff 0000c8 09 01000000")
        + P200[:128]
        + h("c6 01000000")
        + P200[128:],
    ),
    Case(
        "extended delta on type 1, not repeated on the continuation",
        ((6, 9, 1, 10, V10), (6, 9, 1, 10 + 0x01000000, P200)),
        h("06 00000a 00000a 09 01000000")
        + V10
        + h("46 ffffff 0000c8 09 01000000")
        + P200[:128]
        + h("c6")
        + P200[128:],
        writable=False,
    ),
    Case(
        "extended delta on type 2, then a type-3 message carrying it again",
        ((6, 9, 1, 0, I12A), (6, 9, 1, 0x01000000, I12B), (6, 9, 1, 0x02000000, I12C)),
        h("06 000000 00000c 09 01000000")
        + I12A
        + h("86 ffffff 01000000")
        + I12B
        + h("c6 01000000")
        + I12C,
    ),
    Case(
        "two chunk streams interleaved chunk by chunk",
        ((4, 8, 1, 42, A200), (6, 9, 1, 40, P300)),  # in the order they complete
        h("06 000028 00012c 09 01000000")
        + P300[:128]
        + h("04 00002a 0000c8 08 01000000")
        + A200[:128]
        + h("c6")
        + P300[128:256]
        + h("c4")
        + A200[128:]
        + h("c6")
        + P300[256:],
        writable=False,
    ),
    Case(
        "3-byte (little-endian) and 2-byte basic headers interleaved: csid 320 and csid 65",
        ((320, 9, 1, 0, P200), (65, 8, 1, 0, A200)),
        h("01 00 01 000000 0000c8 09 01000000")
        + P200[:128]
        + h("00 01 000000 0000c8 08 01000000")
        + A200[:128]
        + h("c1 00 01")
        + P200[128:]
        + h("c0 01")
        + A200[128:],
        writable=False,
    ),
    Case(
        # Spec 5.3.1.2.4 and FFmpeg: the delta is the type-0 timestamp. nginx-rtmp adds 0.
        "type 3 right after type 0 adds the type-0 timestamp as its delta",
        ((6, 9, 1, 100, V10), (6, 9, 1, 200, key(10, 11))),
        h("06 000064 00000a 09 01000000") + V10 + h("c6") + key(10, 11),
        writable=False,
    ),
    Case(
        "timestamps wrap around at 2**32",
        ((6, 9, 1, 0xFFFFFFF0, V10), (6, 9, 1, 0x10, I12A)),
        h("06 ffffff 00000a 09 01000000 fffffff0") + V10 + h("46 000020 00000c 09") + I12A,
        writable=False,
    ),
    Case(
        "message stream id is little-endian; other types pass through whole",
        ((5, 20, 0x01020304, 0, h("02 0001 78")),),
        h("05 000000 000004 14 04030201 02000178"),
    ),
    Case(
        "a zero-length message delivers nothing and leaves the header state",
        ((6, 9, 1, 5, V10),),
        h("06 000000 000000 09 01000000") + h("46 000005 00000a 09") + V10,
        writable=False,
    ),
    Case(
        # Counting mode has counted the dropped message already: see test_flv.
        "a new type-0 header on a chunk stream drops its unfinished message",
        ((6, 9, 1, 100, V10),),
        h("06 000000 00012c 09 01000000") + P300[:128] + h("06 000064 00000a 09 01000000") + V10,
        writable=False,
    ),
]


def read_chunks(wire: bytes, split: str, seed: int = 0) -> list[Msg]:
    decoder = Decoder()
    for piece in pieces(wire, split, seed):
        decoder.feed(piece)
    return decoder.messages


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case", CHUNKS, ids=str)
def test_reader_reads_table(case: Case, split: str) -> None:
    assert read_chunks(case.wire, split, seed=len(case.wire)) == case.expected


@pytest.mark.parametrize("case", [c for c in CHUNKS if c.writable], ids=str)
def test_writer_writes_table(case: Case) -> None:
    writer, out = ChunkWriter(), bytearray()
    for csid, type_id, msid, timestamp, body in case.messages:
        writer.write(out, csid, type_id, msid, timestamp, body)
    assert bytes(out) == case.wire


def _media_outcome(case: Case, split: str, collect: bool) -> tuple[list, dict[str, int]]:
    server, _ = publishing(collect_media=collect)
    server.feed(case.wire, split)
    media = [
        Msg(e.message_type, e.stream_id, e.timestamp, e.payload) for e in server.of(MediaReceived)
    ]
    return media, server.conn.counters.as_dict()


def _expected_counters(messages: list[Msg]) -> dict[str, int]:
    """What the counters must say for legacy H.264/AAC frames (every message is a frame)."""
    expected = dict.fromkeys(("video_messages", "video_bytes", "video_frames", "keyframes"), 0)
    expected |= dict.fromkeys(("audio_messages", "audio_bytes", "audio_frames"), 0)
    expected |= {"timestamp_regressions": 0, "last_keyframe_ts": -1}
    last = {9: -1, 8: -1}
    for m in messages:
        media = "video" if m.type_id == 9 else "audio"
        expected[f"{media}_messages"] += 1
        expected[f"{media}_bytes"] += len(m.body)
        expected[f"{media}_frames"] += 1
        expected["timestamp_regressions"] += m.timestamp < last[m.type_id]
        last[m.type_id] = m.timestamp
        if m.body[0] == 0x17:
            expected["keyframes"] += 1
            expected["last_keyframe_ts"] = m.timestamp
    expected["last_video_ts"], expected["last_audio_ts"] = last[9], last[8]
    return expected


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case", [c for c in CHUNKS if c.media_only], ids=str)
def test_server_reads_table(case: Case, split: str) -> None:
    media, counters = _media_outcome(case, split, collect=True)
    assert media == case.expected  # payloads reassembled byte-exactly across chunks
    assert {k: counters[k] for k in _expected_counters(media)} == _expected_counters(media)
    _, counted = _media_outcome(case, split, collect=False)
    if not case.drops:  # counting mode counts a media message at its header
        assert counted == counters


@settings(max_examples=150, deadline=None, database=None)
@given(
    case=st.sampled_from(CHUNKS),
    edits=st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.sampled_from(["set", "insert", "delete"]),
            st.binary(min_size=1, max_size=1),
        ),
        max_size=4,
    ),
    cut=st.integers(0, 10**6),
)
def test_mutated_table_bytes_only_raise_protocol_error(case: Case, edits, cut: int) -> None:
    """The table's wire bytes as fuzz seeds: flip, insert, delete, truncate."""
    wire = bytearray(case.wire)
    for position, edit, byte in edits:
        at = position % (len(wire) + 1)
        if edit == "insert":
            wire[at:at] = byte
        elif at < len(wire):
            wire[at : at + 1] = byte if edit == "set" else b""
    wire = bytes(wire[: cut % (len(wire) + 1)] if cut % 3 == 0 else wire)
    for collect in (False, True):
        server, _ = publishing(collect_media=collect)
        with contextlib.suppress(ProtocolError):
            server.feed(wire, "random")
    with contextlib.suppress(ProtocolError):
        read_chunks(wire, "whole")


# Protocol control after a publish has started ------------------------------------------

SESSION_BYTES = len(Peer().publish_session())  # what publishing() sends before a case
WINDOW = SESSION_BYTES + 16 + 12 + 100  # crossed by the last byte of its case


@dataclass(frozen=True)
class Control:
    name: str
    wire: bytes
    media: tuple[tuple[int, int, bytes], ...] = ()  # type, timestamp, payload
    replies: tuple[tuple[int, bytes], ...] = ()  # type, body of what the server sends
    error: str | None = None

    def __str__(self) -> str:
        return self.name


K3000, K65546 = key(3000, 12), key(65546, 13)

CONTROL = [
    Control(
        "client Set Chunk Size 4096, then 3000 bytes in one chunk",
        h("02 000000 000004 01 00000000 00001000") + h("06 000000 000bb8 09 01000000") + K3000,
        media=((9, 0, K3000),),
    ),
    Control(
        "Set Chunk Size 65536 (the largest accepted)",
        h("02 000000 000004 01 00000000 00010000")
        + h("06 000000 01000a 09 01000000")
        + K65546[:65536]
        + h("c6")
        + K65546[65536:],
        media=((9, 0, K65546),),
    ),
    Control(
        "Set Chunk Size 128 (the smallest accepted)",
        h("02 000000 000004 01 00000000 00000080")
        + h("06 000000 00012c 09 01000000")
        + P300[:128]
        + h("c6")
        + P300[128:256]
        + h("c6")
        + P300[256:],
        media=((9, 0, P300),),
    ),
    Control(
        "Set Chunk Size 127 refused",
        h("02 000000 000004 01 00000000 0000007f"),
        error="chunk size 127 outside the accepted range 128-65536",
    ),
    Control(
        "Set Chunk Size 65537 refused",
        h("02 000000 000004 01 00000000 00010001"),
        error="chunk size 65537 outside the accepted range 128-65536",
    ),
    Control(
        "Set Chunk Size with the reserved top bit refused",
        h("02 000000 000004 01 00000000 80001000"),
        error="reserved top bit",
    ),
    Control(
        "Set Chunk Size shorter than 4 bytes refused",
        h("02 000000 000002 01 00000000 1000"),
        error="Set Chunk Size message shorter than 4 bytes",
    ),
    Control(
        "Abort: a type-3 header then starts a new message instead of continuing",
        h("06 000000 00012c 09 01000000")
        + P300[:128]
        + h("02 000000 000004 02 00000000 00000006")
        + h("c6")
        + Q300[:128]
        + h("c6")
        + Q300[128:256]
        + h("c6")
        + Q300[256:],
        media=((9, 0, Q300),),
    ),
    Control("Abort of an idle chunk stream", h("02 000000 000004 02 00000000 00000009")),
    Control(
        "Abort shorter than 4 bytes refused",
        h("02 000000 000002 02 00000000 0006"),
        error="Abort message shorter than 4 bytes",
    ),
    Control(
        "Window Acknowledgement Size: an Acknowledgement once that many bytes arrived",
        h("02 000000 000004 05 00000000")
        + WINDOW.to_bytes(4, "big")
        + h("06 000000 000064 09 01000000")
        + key(100, 14),
        media=((9, 0, key(100, 14)),),
        replies=((3, WINDOW.to_bytes(4, "big")),),
    ),
    Control(
        "Window Acknowledgement Size 0 refused",
        h("02 000000 000004 05 00000000 00000000"),
        error="Window Acknowledgement Size of 0",
    ),
    Control("Set Peer Bandwidth from the peer", h("02 000000 000005 06 00000000 00002710 02")),
    Control(
        "Set Peer Bandwidth shorter than 5 bytes refused",
        h("02 000000 000004 06 00000000 00002710"),
        error="Set Peer Bandwidth shorter than 5 bytes",
    ),
    Control(
        "User Control PingRequest answered by a PingResponse with its value",
        h("02 000000 000006 04 00000000 0006 12345678"),
        replies=((4, h("0007 12345678")),),
    ),
    Control(
        "User Control SetBufferLength needs no answer",
        h("02 000000 00000a 04 00000000 0003 00000001 00007530"),
    ),
    Control(
        "PingRequest without its value refused",
        h("02 000000 000004 04 00000000 0006 1234"),
        error="PingRequest message shorter than 4 bytes",
    ),
    Control(
        "User Control shorter than 2 bytes refused",
        h("02 000000 000001 04 00000000 00"),
        error="User Control message shorter than 2 bytes",
    ),
    Control("Acknowledgement from the peer", h("02 000000 000004 03 00000000 00001000")),
    Control("shared object messages are ignored", h("05 000000 000003 13 01000000 000000")),
    Control(
        "message type 7 does not exist",
        h("02 000000 000001 07 00000000 00"),
        error="unknown message type 7",
    ),
    Control(
        "message type 255 does not exist",
        h("05 000000 000001 ff 00000000 00"),
        error="unknown message type 255",
    ),
    Control(
        "type-1 header on a chunk stream never seen",
        h("4a 000000 000004 09"),
        error="chunk stream 10 starts with a type-1 header",
    ),
    Control(
        "type-2 header on a chunk stream never seen",
        h("8a 000000"),
        error="chunk stream 10 starts with a type-2 header",
    ),
    Control(
        "type-3 header on a chunk stream never seen",
        h("ca"),
        error="chunk stream 10 starts with a type-3 header",
    ),
    Control(
        # The hot path waits for the 2 payload bytes that classify a media message.
        "a 16 MiB media message is refused at its header",
        h("06 000000 ffffff 09 01000000 1701"),
        error=f"media message of 16777215 bytes exceeds the limit of {CONFIG.max_message_size}",
    ),
    Control(
        "an aggregate above max_message_size is refused at its header",
        h("06 000000 ffffff 16 01000000"),
        error=f"type 22 and 16777215 bytes exceeds the limit of {CONFIG.max_message_size}",
    ),
    Control(
        "a command above max_control_size is refused at its header",
        h("03 000000 010001 14 00000000"),
        error=f"type 20 and 65537 bytes exceeds the limit of {CONFIG.max_control_size}",
    ),
]


def _control_outcome(case: Control, split: str, seed: int) -> tuple:
    server, _ = publishing(collect_media=True)
    try:
        server.feed(case.wire, random.Random(seed) if split == "random" else split)
    except ProtocolError as error:
        return (), (), str(error)  # events of the failing call are lost with it
    media = tuple((e.message_type, e.timestamp, e.payload) for e in server.of(MediaReceived))
    replies = tuple((m.type_id, m.body) for m in server.replies())
    return media, replies, None


@pytest.mark.parametrize("case", CONTROL, ids=str)
def test_control_table(case: Control) -> None:
    outcomes = {split: _control_outcome(case, split, seed=7) for split in SPLITS}
    outcomes["random2"] = _control_outcome(case, "random", seed=8)
    media, replies, error = outcomes["whole"]
    assert all(outcome == outcomes["whole"] for outcome in outcomes.values())
    if case.error is None:
        assert error is None
        assert media == case.media
        assert replies == case.replies
    else:
        assert error is not None
        assert case.error in error


def test_window_case_crosses_the_window_on_its_last_byte() -> None:
    """The acknowledgement case above is built so every split acknowledges the same count."""
    server, _ = publishing()
    wire = next(c.wire for c in CONTROL if c.name.startswith("Window Acknowledgement Size:"))
    server.feed(wire[:-1])
    assert [m.type_id for m in server.replies()] == []
    server.feed(wire[-1:])
    assert server.conn.bytes_received == WINDOW
    assert [(m.type_id, m.u32) for m in server.replies()] == [(3, WINDOW)]


def test_acknowledgements_repeat_every_window_when_fed_byte_by_byte() -> None:
    server, peer = publishing()
    start = server.conn.bytes_received
    window = 1000
    media = b"".join(peer.video(ts, key(500, ts)) for ts in range(0, 200, 20))
    server.feed(h("02 000000 000004 05 00000000") + window.to_bytes(4, "big") + media, "bytes")
    acks = [m.u32 for m in server.replies() if m.type_id == 3]
    # More than a window arrived before the window was set: acknowledged at once, then
    # after every further window, exactly (the check runs after every byte here).
    first, total = start + 16, start + 16 + len(media)
    assert acks == list(range(first, total + 1, window))
    assert server.conn.counters.video_frames == 10


def test_abort_counts_the_discarded_message() -> None:
    server, _ = publishing(collect_media=True)
    wire = next(c.wire for c in CONTROL if c.name.startswith("Abort: a type-3"))
    server.feed(wire)
    assert server.conn._reader.discarded_messages == 1


def test_too_many_chunk_streams_refused() -> None:
    """10,000 distinct chunk stream ids: refused once config.max_chunk_streams are in use."""
    server, peer = publishing()
    in_use = len(server.conn._reader.streams)
    wire = b"".join(peer.message(csid, 8, 1, 0, A8) for csid in range(64, 64 + 10_000))
    with pytest.raises(ProtocolError, match=f"more than {CONFIG.max_chunk_streams} chunk streams"):
        server.feed(wire, "random")
    assert len(server.conn._reader.streams) == CONFIG.max_chunk_streams
    assert server.conn.counters.audio_messages == CONFIG.max_chunk_streams - in_use


def test_limits_follow_the_config() -> None:
    config = RtmpConfig(max_message_size=4096, max_control_size=1024, max_chunk_size=8192)
    for wire, error in (
        (h("06 000000 001001 09 01000000 1701"), "media message of 4097 bytes"),
        (h("06 000000 000401 12 01000000"), "type 18 and 1025 bytes"),
        (h("02 000000 000004 01 00000000 00002001"), "chunk size 8193 outside"),
    ):
        server, _ = publishing(config)
        with pytest.raises(ProtocolError, match=error):
            server.feed(wire)
    server, peer = publishing(config, collect_media=True)
    server.feed(peer.video(0, key(4096)))  # exactly at the limit is fine
    assert server.conn.counters.video_frames == 1


def test_partial_messages_share_one_budget_across_chunk_streams() -> None:
    """Each stream may open a message up to its limit, but not all of them at once."""
    config = RtmpConfig(max_message_size=8192, max_control_size=4096)
    server, _ = publishing(config)
    budget = server.conn._reader.max_held
    assert budget == 8192 + 4096
    opened = b"".join(  # the first 128-byte chunk of a 4000-byte command on each stream
        h(f"00 {csid - 64:02x} 000000 000fa0 14 00000000") + bytes(128) for csid in range(64, 68)
    )
    with pytest.raises(ProtocolError, match=f"partial messages of 16000 bytes exceed.*{budget}"):
        server.feed(opened)
    assert server.conn.buffered_bytes() <= config.read_buffer_size + budget


def test_the_read_buffer_is_small_until_a_publish_is_accepted() -> None:
    server = Server(auto=False)
    server.feed(Peer().publish_session())
    assert len(server.conn._reader.buf) == FIRST_BUFFER_SIZE
    server.accept_connect()
    assert len(server.conn._reader.buf) == FIRST_BUFFER_SIZE  # the publish waits
    server.accept_publish()
    assert len(server.conn._reader.buf) == CONFIG.read_buffer_size


def test_resizing_keeps_the_unparsed_bytes() -> None:
    messages: list[int] = []
    reader = ChunkReader(
        lambda type_id, *_: messages.append(type_id),
        buffer_size=4096,
        max_chunk_streams=8,
        max_message_size=65536,
        max_control_size=4096,
    )
    wire = Peer().command("createStream", 2, None)
    for _ in range(2):
        reader.get_buffer()[: len(wire)] = wire
        reader.end += len(wire)
    reader.resize(65536)
    assert len(reader.buf) == 65536
    reader.parse()
    assert messages == [20, 20]
    reader.get_buffer()[: len(wire)] = wire
    reader.end += len(wire)
    with pytest.raises(ValueError, match="cannot hold the unparsed bytes"):
        reader.resize(len(wire) - 1)


# The writer ------------------------------------------------------------------------------


def test_basic_header_ranges() -> None:
    assert basic_header(3, 2) == h("c2")
    assert basic_header(1, 63) == h("7f")
    assert basic_header(0, 64) == h("00 00")
    assert basic_header(2, 319) == h("80 ff")
    assert basic_header(0, 320) == h("01 00 01")
    assert basic_header(3, 65599) == h("c1 ff ff")
    for csid in (0, 1, 65600):
        with pytest.raises(ValueError, match="out of range"):
            basic_header(0, csid)


def test_writer_starts_over_with_type_0_when_it_must() -> None:
    writer, out = ChunkWriter(), bytearray()
    writer.write(out, 6, 9, 1, 100, V10)
    writer.write(out, 6, 9, 2, 100, V10)  # another message stream
    writer.write(out, 6, 9, 2, 50, V10)  # the timestamp went back
    writer.write(out, 6, 9, 2, 50, V10)  # same everything: type 2 with delta 0 after type 0
    assert bytes(out) == (
        h("06 000064 00000a 09 01000000")
        + V10
        + h("06 000064 00000a 09 02000000")
        + V10
        + h("06 000032 00000a 09 02000000")
        + V10
        + h("86 000000")
        + V10
    )
    with pytest.raises(ValueError, match="16 MiB"):
        writer.write(out, 6, 9, 1, 0, bytes(0x1000000))


@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(chunk_size=st.integers(128, 1024), split_seed=st.integers(0, 1000))
def test_writer_chunk_size_applies_to_every_message(chunk_size: int, split_seed: int) -> None:
    writer, out = ChunkWriter(), bytearray()
    writer.chunk_size = chunk_size
    writer.write(out, 6, 9, 1, 0, P300 * 4)
    decoder = Decoder(chunk_size=chunk_size)
    for piece in pieces(bytes(out), "random", split_seed):
        decoder.feed(piece)
    assert decoder.messages == [Msg(9, 1, 0, P300 * 4)]
    continuations = -(-len(P300 * 4) // chunk_size) - 1
    assert len(out) == 12 + len(P300 * 4) + continuations


@pytest.mark.parametrize("collect", [False, True], ids=["counting", "collecting"])
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case", [c for c in CHUNKS if c.media_only and not c.drops], ids=str)
def test_a_requested_keyframe_is_captured_once_and_counted_as_usual(
    case: Case, split: str, collect: bool
) -> None:
    server, _ = publishing()
    server.conn.collect_media = collect  # a stream with a viewer or a recording, too
    server.conn.capture_keyframe = True
    server.feed(case.wire, split)
    keyframes = [m for m in case.expected if m.type_id == 9 and m.body[0] == 0x17]
    captured = server.of(KeyframeCaptured)
    if keyframes:
        first = keyframes[0]
        assert [(e.timestamp, e.packet.keyframe, e.packet.body) for e in captured] == [
            (first.timestamp, True, first.body[5:])
        ]
        assert not server.conn.capture_keyframe  # one picture per request
    else:
        assert captured == []
        assert server.conn.capture_keyframe  # still waiting for one
    _, counted = _media_outcome(case, split, collect=False)
    assert server.conn.counters.as_dict() == counted
