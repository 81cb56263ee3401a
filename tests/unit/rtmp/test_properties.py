"""Property tests: malformed input only ever raises ProtocolError, memory stays within the
configured limits, ChunkWriter/ChunkReader and the AMF0 codec round-trip."""

from __future__ import annotations

import contextlib
import math
import random
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stream_sync.rtmp import amf0
from stream_sync.rtmp.amf0 import UNDEFINED, Date, EcmaArray, TypedObject, XmlDocument
from stream_sync.rtmp.chunk import ChunkWriter
from stream_sync.rtmp.client import ClientConnection
from stream_sync.rtmp.config import RtmpConfig
from stream_sync.rtmp.errors import ProtocolError
from stream_sync.rtmp.events import PublishRequested

from .test_amf0 import same
from .test_chunk import fill
from .wire import T0, Decoder, Msg, Peer, Server, pieces, publishing, seeded_bytes

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Strategies ------------------------------------------------------------------------------

finite = st.floats(allow_nan=False)
ODD_NUMBERS = [math.nan, math.inf, -math.inf, -1.0, 0.5, 2.0**32, 1e300, -0.0]
odd_number = st.sampled_from(ODD_NUMBERS)
any_number = st.one_of(odd_number, odd_number, st.floats())  # the peer may send any double
keys = st.text(max_size=8)
scalars = st.one_of(
    st.none(),
    st.just(UNDEFINED),
    st.booleans(),
    finite,
    st.text(max_size=24),
    st.builds(XmlDocument, st.text(max_size=24)),
    st.builds(Date, finite, st.integers(-32768, 32767)),
)
amf_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.dictionaries(keys, children, max_size=4).map(EcmaArray),
        st.builds(TypedObject, keys, st.dictionaries(keys, children, max_size=3)),
    ),
    max_leaves=16,
)
CONNECT_KEYS = ["app", "tcUrl", "flashVer", "fourCcList", "capsEx", "objectEncoding", "x"]
peer_scalars = st.one_of(any_number, st.none(), st.booleans(), st.text(max_size=12))
peer_values = st.one_of(
    peer_scalars,
    st.recursive(
        peer_scalars,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.sampled_from(CONNECT_KEYS), children, max_size=4)
        ),
        max_leaves=8,
    ),
)
COMMANDS = [
    "connect",
    "createStream",
    "publish",
    "play",
    "deleteStream",
    "FCUnpublish",
    "closeStream",
    "releaseStream",
    "FCPublish",
    "_result",
    "onStatus",
    "getStreamLength",
]


def depth(value: Any) -> int:
    if isinstance(value, TypedObject):
        value = value.properties
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@st.composite
def raw_chunk(draw: st.DrawFn) -> bytes:
    """A chunk with plausible but unchecked header fields, then some payload bytes."""
    fmt = draw(st.integers(0, 3))
    csid = draw(st.sampled_from([2, 3, 4, 5, 6, 8, 9, 64, 300, 320, 65599]))
    if csid < 64:
        basic = bytes(((fmt << 6) | csid,))
    elif csid < 320:
        basic = bytes((fmt << 6, csid - 64))
    else:
        basic = bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))
    stamp = draw(st.sampled_from([0, 10, 0xFFFFFF]))
    length = draw(st.sampled_from([0, 1, 2, 4, 5, 6, 12, 100, 129, 300, 2000, 70000, 0xFFFFFF]))
    type_id = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 17, 18, 19, 20, 22, 0, 7, 255]))
    msid = draw(st.sampled_from([0, 1, 2]))
    header = stamp.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes((type_id,))
    header += msid.to_bytes(4, "little")
    header = header[: (11, 7, 3, 0)[fmt]]
    if stamp == 0xFFFFFF or draw(st.booleans()):
        header += draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    return basic + header + draw(st.binary(max_size=300))


connect_objects = st.fixed_dictionaries(
    {},
    optional={
        "app": peer_values,
        "tcUrl": peer_values,
        "capsEx": st.one_of(any_number, any_number, peer_values),
        "objectEncoding": st.one_of(any_number, any_number, peer_values),
        "fourCcList": st.lists(peer_scalars, max_size=3) | peer_values,
        "videoFourCcInfoMap": peer_values,
    },
)
command_objects = st.one_of(st.none(), peer_values, connect_objects)


@st.composite
def command(draw: st.DrawFn, name: str | None = None) -> tuple[int, int, int, bytes]:
    """Command name, transaction id, command object, arguments: each possibly odd."""
    name = name or draw(st.sampled_from(COMMANDS))
    first = connect_objects if name == "connect" and draw(st.integers(0, 7)) else command_objects
    args = [draw(first), *draw(st.lists(peer_values, max_size=3))]
    args = args[: draw(st.integers(0, len(args)))] if draw(st.booleans()) else args
    msid = draw(st.sampled_from([0, 1, 2]))
    csid = draw(st.sampled_from([3, 8]))
    body = amf0.encode(name, draw(st.one_of(any_number, st.just(0.0))), *args)
    return draw(st.sampled_from([20, 20, 17])), csid, msid, body


@st.composite
def client_input(draw: st.DrawFn) -> list[bytes]:
    """Raw chunks, real AMF commands (encoded by a peer) and plain garbage, mixed."""
    peer = Peer()
    parts = []
    if draw(st.integers(0, 3)):  # usually a connect first, so the rest gets past it
        _, _, _, body = draw(command("connect"))
        parts.append(peer.message(3, 20, 0, 0, body))
    for kind in draw(
        st.lists(st.sampled_from(["raw", "command", "garbage", "media"]), max_size=12)
    ):
        if kind == "raw":
            parts.append(draw(raw_chunk()))
        elif kind == "command":
            type_id, csid, msid, body = draw(command())
            body = (b"\x00" + body) if type_id == 17 else body
            parts.append(peer.message(csid, type_id, msid, 0, body))
        elif kind == "media":
            head = draw(st.binary(min_size=1, max_size=12))
            parts.append(
                peer.message(6, draw(st.sampled_from([8, 9, 22])), 1, 0, head + fill(200, 1))
            )
        else:
            parts.append(draw(st.binary(max_size=64)))
    return parts


# (a) Only ProtocolError, whatever arrives ----------------------------------------------------


def _feed_all(server: Server, parts: list[bytes], seed: int) -> None:
    with contextlib.suppress(ProtocolError):
        server.feed(b"".join(parts), random.Random(seed))


@PROPERTY
@given(data=st.binary(max_size=3000), seed=st.integers(0, 1000))
def test_any_bytes_after_the_handshake(data: bytes, seed: int) -> None:
    server = Server()
    server.feed(Peer().handshake())
    _feed_all(server, [data], seed)
    server, _ = publishing(collect_media=bool(seed & 1))
    _feed_all(server, [data], seed)


@PROPERTY
@given(parts=client_input(), seed=st.integers(0, 1000), collect=st.booleans())
def test_structured_input_after_the_handshake(parts: list[bytes], seed: int, collect: bool) -> None:
    server = Server(collect_media=collect)
    server.feed(Peer().handshake())
    _feed_all(server, parts, seed)
    server, _ = publishing(collect_media=collect)
    _feed_all(server, parts, seed)


@PROPERTY
@given(parts=client_input(), data=st.binary(max_size=500))
def test_the_client_only_raises_protocol_error(parts: list[bytes], data: bytes) -> None:
    conn = ClientConnection(app="a", tc_url="rtmp://h/a", now=T0, random_bytes=seeded_bytes(1))
    conn.data_to_send()
    with contextlib.suppress(ProtocolError):
        conn.receive_data(b"\x03" + bytes(3072) + b"".join(parts) + data)


# (b) Memory stays within the configured limits -------------------------------------------

SMALL = RtmpConfig(
    read_buffer_size=4096, max_control_size=1024, max_message_size=2048, max_chunk_streams=6
)


@PROPERTY
@given(
    parts=client_input(),
    more=st.lists(raw_chunk(), max_size=20),
    auto=st.booleans(),
    seed=st.integers(0, 99),
)
def test_buffered_bytes_bounded_by_the_config(parts, more, auto: bool, seed: int) -> None:
    server, rng = Server(SMALL, auto=auto, collect_media=bool(seed & 1)), random.Random(seed)
    peer = Peer()
    opening = peer.publish_session() if seed & 2 else peer.handshake()
    conn = server.conn
    try:
        for piece in pieces(opening + b"".join(parts) + b"".join(more), rng):
            server.feed(piece)
            streams = conn._reader.streams
            assert len(streams) <= SMALL.max_chunk_streams
            # Control messages are held whole up to max_control_size; media (collected
            # sequence headers, multitrack, or everything with collect_media) up to
            # max_message_size, but only once a publish was accepted.
            published = bool(server.of(PublishRequested)) and auto
            per_stream = SMALL.max_message_size if published else SMALL.max_control_size
            limit = 2 * SMALL.read_buffer_size + per_stream * len(streams)
            assert conn.buffered_bytes() <= limit
    except ProtocolError:
        pass


# (c) ChunkWriter -> ChunkReader reproduces every message -----------------------------------

timestamps = st.one_of(
    st.integers(0, 5000), st.integers(0xFFFFF0, 0x1000010), st.integers(0, 2**32 - 1)
)
payloads = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.builds(fill, st.integers(1, 9000), st.integers(0, 250)),
)


csid_values = st.one_of(st.integers(2, 63), st.integers(64, 319), st.integers(320, 65599))


@st.composite
def message_sequence(draw: st.DrawFn) -> list[tuple]:
    """Messages on a few chunk streams (so headers compress), with chunk size changes."""
    pool = draw(st.lists(csid_values, min_size=1, max_size=5, unique=True))
    sequence: list[tuple] = []
    for _ in range(draw(st.integers(1, 25))):
        if draw(st.integers(0, 9)) == 0:
            size = draw(st.one_of(st.integers(128, 600), st.sampled_from([4096, 65536])))
            sequence.append(("chunk size", size))
            continue
        type_id = draw(st.sampled_from([8, 9, 22, 3, 4, 5, 6, 15, 17, 18, 19, 20]))
        msid = 1 if type_id in (8, 9, 22) else draw(st.sampled_from([0, 1, 2**32 - 1]))
        sequence.append(
            (draw(st.sampled_from(pool)), type_id, msid, draw(timestamps), draw(payloads))
        )
    return sequence


@PROPERTY
@given(
    messages=message_sequence(),
    chunk_size=st.one_of(st.integers(128, 1000), st.integers(128, 65536)),
    seed=st.integers(0, 1000),
)
def test_writer_reader_round_trip(messages: list[tuple], chunk_size: int, seed: int) -> None:
    writer, wire, expected = ChunkWriter(), bytearray(), []
    writer.chunk_size = chunk_size
    for item in messages:
        if item[0] == "chunk size":
            body = item[1].to_bytes(4, "big")
            writer.write(wire, 2, 1, 0, 0, body)
            writer.chunk_size = item[1]
            expected.append(Msg(1, 0, 0, body))
            continue
        csid, type_id, msid, timestamp, payload = item
        writer.write(wire, csid, type_id, msid, timestamp, payload)
        expected.append(Msg(type_id, msid, timestamp, payload))
    decoder = Decoder(chunk_size=chunk_size)
    for piece in pieces(bytes(wire), "random", seed):
        decoder.feed(piece)
    assert decoder.messages == expected


# (d) AMF0 -------------------------------------------------------------------------------------


@PROPERTY
@given(values=st.lists(amf_values, max_size=4))
def test_amf0_round_trip(values: list[Any]) -> None:
    assume(all(depth(v) <= amf0.MAX_DEPTH for v in values))
    wire = amf0.encode(*values)
    decoded = amf0.decode_all(wire)
    assert same(decoded, values)
    assert amf0.encode(*decoded) == wire


@PROPERTY
@given(data=st.binary(max_size=400))
def test_amf0_decoding_arbitrary_bytes(data: bytes) -> None:
    try:
        values = amf0.decode_all(data)
    except ProtocolError:
        return
    assert all(depth(v) <= amf0.MAX_DEPTH + 1 for v in values)


@PROPERTY
@given(value=peer_values)
def test_amf0_numbers_round_trip_bit_exact(value: Any) -> None:
    """NaN and infinities included (NaN != NaN, so compare the bytes)."""
    wire = amf0.encode(value)
    assert amf0.encode(*amf0.decode_all(wire)) == wire
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(amf0.decode_all(wire)[0])
