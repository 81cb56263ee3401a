"""AMF0: every type clients send, the AMF3 command wrapper, and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from stream_sync.rtmp import amf0
from stream_sync.rtmp.amf0 import UNDEFINED, Date, EcmaArray, TypedObject, XmlDocument
from stream_sync.rtmp.errors import ProtocolError
from stream_sync.rtmp.events import ConnectRequested, MetadataReceived

from .wire import HANDSHAKE, Capture, Decoder, Peer, Server, h, publishing


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (EcmaArray is not a plain dict)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, TypedObject):
        return a.class_name == b.class_name and same(a.properties, b.properties)
    return bool(a == b)


# (name, value, wire bytes): encode(value) == wire and decode(wire) == value.
TYPES = [
    ("number", 1.5, h("00 3ff8000000000000")),
    ("negative number", -2.5, h("00 c004000000000000")),
    ("boolean true", True, h("01 01")),
    ("boolean false", False, h("01 00")),
    ("string", "live", h("02 0004 6c697665")),
    ("empty string", "", h("02 0000")),
    ("utf-8 string", "é", h("02 0002 c3a9")),
    (
        "object",
        {"app": "live", "n": 1.0},
        h("03 0003 617070 02 0004 6c697665 0001 6e 00 3ff0000000000000 000009"),
    ),
    ("empty object", {}, h("03 000009")),
    ("null", None, h("05")),
    ("undefined", UNDEFINED, h("06")),
    (
        "ECMA array",
        EcmaArray(width=320.0),
        h("08 00000001 0005 7769647468 00 4074000000000000 000009"),
    ),
    ("strict array", [1.0, "x", None], h("0a 00000003 00 3ff0000000000000 02 0001 78 05")),
    ("date", Date(1e12, 60), h("0b 426d1a94a2000000 003c")),
    ("xml document", XmlDocument("<a/>"), h("0f 00000004 3c612f3e")),
    ("typed object", TypedObject("Foo", {"x": None}), h("10 0003 466f6f 0001 78 05 000009")),
    (
        "nested",
        {"a": [EcmaArray(b={"c": True})]},
        h("03 0001 61 0a 00000001 08 00000001 0001 62 03 0001 63 01 01 000009 000009 000009"),
    ),
]


@pytest.mark.parametrize(("value", "wire"), [t[1:] for t in TYPES], ids=[t[0] for t in TYPES])
def test_types_round_trip(value: Any, wire: bytes) -> None:
    assert amf0.encode(value) == wire
    decoded, end = amf0.decode_value(memoryview(wire), 0)
    assert end == len(wire)
    assert same(decoded, value)


def test_long_string_decodes_and_long_values_encode_as_long_strings() -> None:
    assert amf0.decode_all(h("0c 00000003 616263")) == ["abc"]
    long = "x" * 0x10000
    wire = amf0.encode(long)
    assert wire[:5] == h("0c 00010000")
    assert amf0.decode_all(wire) == [long]
    assert amf0.encode("x" * 0xFFFF)[:3] == h("02 ffff")  # the largest short string


def test_object_end_marker_terminates_objects_only() -> None:
    assert amf0.decode_all(h("03 0000 09")) == [{}]
    with pytest.raises(ProtocolError, match="object-end marker outside an object"):
        amf0.decode_all(h("09"))
    # An empty key followed by anything but 0x09 is an ordinary property named "".
    assert amf0.decode_all(h("03 0000 05 000009")) == [{"": None}]


def test_ecma_array_count_is_a_hint_and_the_end_marker_may_be_missing() -> None:
    assert amf0.decode_all(h("08 00000063 0001 61 05 000009")) == [{"a": None}]
    values = amf0.decode_all(h("08 00000001 0001 61 01 01"))  # message ends, no 00 00 09
    assert same(values, [EcmaArray(a=True)])


def test_unsupported_marker_reads_as_null_and_others_are_refused() -> None:
    assert amf0.decode_all(h("0d")) == [None]
    for marker, text in ((0x04, "0x04"), (0x07, "0x07"), (0x0E, "0x0e"), (0x12, "0x12")):
        with pytest.raises(ProtocolError, match=f"unsupported AMF0 type marker {text}"):
            amf0.decode_all(bytes((marker, 0, 0)))


def test_avmplus_marker_refused() -> None:
    with pytest.raises(ProtocolError, match="AMF3 values are not supported"):
        amf0.decode_all(h("02 0007 636f6e6e656374 11 0401"))


# An ECMA array may end where the data ends (above), so its prefixes can be complete.
FIXED_END = [t for t in TYPES if t[0] not in ("ECMA array", "nested")]


@pytest.mark.parametrize("wire", [t[2] for t in FIXED_END], ids=[t[0] for t in FIXED_END])
def test_truncated_values_refused(wire: bytes) -> None:
    for size in range(len(wire)):
        with pytest.raises(ProtocolError):
            amf0.decode_value(memoryview(wire[:size]), 0)


def test_truncated_ecma_array_value_refused() -> None:
    wire = amf0.encode(EcmaArray(width=320.0))
    for size in range(len(wire) - 3):  # up to, not including, the end marker
        if size != 5:  # 08 + count: no property yet, which is an empty array
            with pytest.raises(ProtocolError):
                amf0.decode_value(memoryview(wire[:size]), 0)


def test_absurd_strict_array_count_refused_before_allocating() -> None:
    with pytest.raises(ProtocolError, match="claims 4294967295 elements"):
        amf0.decode_all(h("0a ffffffff 05 05 05"))
    with pytest.raises(ProtocolError, match="claims 4 elements"):
        amf0.decode_all(h("0a 00000004 05 05 05"))


def _nested(depth: int, inner: Any) -> Any:
    for level in range(depth):
        inner = [inner] if level % 2 else {"k": inner}
    return inner


def test_nesting_limit() -> None:
    ok = amf0.encode(_nested(amf0.MAX_DEPTH, 1.0))
    assert amf0.decode_all(ok) == [_nested(amf0.MAX_DEPTH, 1.0)]
    too_deep = h("0a 00000001") * (amf0.MAX_DEPTH + 1) + h("05")
    with pytest.raises(ProtocolError, match=f"nested deeper than {amf0.MAX_DEPTH}"):
        amf0.decode_all(too_deep)
    with pytest.raises(ProtocolError, match="nested deeper"):
        amf0.decode_all(h("03 0001 61") * 200 + h("05"))  # long before any recursion trouble
    with pytest.raises(ValueError, match="nested deeper"):
        amf0.encode(_nested(amf0.MAX_DEPTH + 1, 1.0))


def test_encoder_refuses_what_amf0_cannot_carry() -> None:
    with pytest.raises(TypeError, match="cannot encode bytes"):
        amf0.encode(b"raw")
    with pytest.raises(ValueError, match="property name longer than 65535"):
        amf0.encode({"k" * 0x10000: 1.0})


def test_real_connect_commands_decode() -> None:
    """The connect command of FFmpeg, OBS and both GStreamer elements, from the captures."""
    for name in ("ff51-h264-aac", "obs29-h264-aac", "gst-rtmpsink-h264-aac", "ff9-hevc-opus"):
        capture = Capture.load(name)
        connect = next(m for m in Decoder(skip=HANDSHAKE).feed(capture.c2s) if m.type_id == 20)
        command, txn, props, *rest = connect.values
        assert (command, txn, rest) == ("connect", 1.0, [])
        assert props["app"] == "live"
        assert props["tcUrl"].startswith("rtmp://127.0.0.1:")
        assert amf0.encode(*connect.values) == connect.body  # byte-exact re-encoding


# The AMF3 wrapper: message types 17 and 15 carry a 0x00 format byte, then AMF0 values.


def test_amf3_command_wrapper_carries_amf0_commands() -> None:
    peer, server = Peer(), Server(auto=False)
    body = b"\x00" + amf0.encode("connect", 1.0, {"app": "live", "objectEncoding": 3.0})
    events = server.feed(peer.handshake() + peer.message(3, 17, 0, 0, body))
    (request,) = [e for e in events if isinstance(e, ConnectRequested)]
    assert (request.app, request.object_encoding) == ("live", 3)
    server.accept_connect()
    assert [m.name for m in server.replies() if m.type_id == 20] == ["_result"]


def test_amf3_data_wrapper_carries_metadata() -> None:
    server, peer = publishing()
    body = b"\x00" + amf0.encode("@setDataFrame", "onMetaData", EcmaArray(width=320.0))
    server.feed(peer.message(4, 15, 1, 0, body))
    assert [e.metadata for e in server.of(MetadataReceived)] == [{"width": 320.0}]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (h("11 0a0b01"), "unknown format selector"),  # an AVM+ switch as the format byte
        (b"\x00" + h("02 0007 636f6e6e656374 00 3ff0000000000000 11 0a0b01"), "AMF3 values"),
        (h("01") + amf0.encode("connect", 1.0), "unknown format selector"),
    ],
)
def test_amf3_wrapper_refusals(body: bytes, error: str) -> None:
    peer, server = Peer(), Server()
    wire = peer.handshake() + peer.message(3, 17, 0, 0, body)
    with pytest.raises(ProtocolError, match=error):
        server.feed(wire)
