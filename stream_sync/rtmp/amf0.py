"""AMF0, the encoding of RTMP commands and FLV script data.

Decoding accepts every type real clients send and refuses the rest with a
ProtocolError; nesting depth and claimed sizes are bounded, so no input can make
the decoder recurse deeply or allocate more than the message it came from.
AMF3 appears only behind the AVM+ marker (0x11) and is refused: no encoder in
the field publishes with objectEncoding 3.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .errors import ProtocolError

MAX_DEPTH = 16

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")


class Marker(IntEnum):
    NUMBER = 0x00
    BOOLEAN = 0x01
    STRING = 0x02
    OBJECT = 0x03
    MOVIECLIP = 0x04
    NULL = 0x05
    UNDEFINED = 0x06
    REFERENCE = 0x07
    ECMA_ARRAY = 0x08
    OBJECT_END = 0x09
    STRICT_ARRAY = 0x0A
    DATE = 0x0B
    LONG_STRING = 0x0C
    UNSUPPORTED = 0x0D
    RECORDSET = 0x0E
    XML_DOCUMENT = 0x0F
    TYPED_OBJECT = 0x10
    AVMPLUS = 0x11


class _Undefined:
    """AMF0 undefined; distinct from null, which is Python's None."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


class EcmaArray(dict[str, Any]):
    """An associative array; kept apart from a plain object so it round-trips."""


class XmlDocument(str):
    """An XML document value (long-string encoded)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Date:
    milliseconds: float
    timezone: int = 0


@dataclass(frozen=True, slots=True)
class TypedObject:
    class_name: str
    properties: dict[str, Any]


def decode_all(data: bytes | bytearray | memoryview, offset: int = 0) -> list[Any]:
    """Decode consecutive values until the data ends (a command's arguments)."""
    view = memoryview(data)
    values: list[Any] = []
    end = len(view)
    while offset < end:
        value, offset = decode_value(view, offset)
        values.append(value)
    return values


def decode_value(view: memoryview, offset: int, depth: int = 0) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise ProtocolError(f"AMF0 values nested deeper than {MAX_DEPTH}")
    end = len(view)
    if offset >= end:
        raise ProtocolError("AMF0 value expected, data ended")
    marker = view[offset]
    offset += 1
    if marker == Marker.NUMBER:
        _need(view, offset, 8)
        return _DOUBLE.unpack_from(view, offset)[0], offset + 8
    if marker == Marker.BOOLEAN:
        _need(view, offset, 1)
        return view[offset] != 0, offset + 1
    if marker == Marker.STRING:
        return _short_string(view, offset)
    if marker == Marker.OBJECT:
        props: dict[str, Any] = {}
        return props, _properties(view, offset, props, depth, lenient_end=False)
    if marker == Marker.NULL:
        return None, offset
    if marker == Marker.UNDEFINED:
        return UNDEFINED, offset
    if marker == Marker.ECMA_ARRAY:
        _need(view, offset, 4)  # the count is only a hint; the end marker decides
        array = EcmaArray()
        return array, _properties(view, offset + 4, array, depth, lenient_end=True)
    if marker == Marker.STRICT_ARRAY:
        _need(view, offset, 4)
        count = _U32.unpack_from(view, offset)[0]
        offset += 4
        if count > end - offset:  # every element takes at least one byte
            raise ProtocolError(f"AMF0 strict array claims {count} elements, data is shorter")
        items: list[Any] = []
        for _ in range(count):
            item, offset = decode_value(view, offset, depth + 1)
            items.append(item)
        return items, offset
    if marker == Marker.DATE:
        _need(view, offset, 10)
        milliseconds, timezone = _DATE.unpack_from(view, offset)
        return Date(milliseconds, timezone), offset + 10
    if marker == Marker.LONG_STRING:
        return _long_string(view, offset)
    if marker == Marker.XML_DOCUMENT:
        text, offset = _long_string(view, offset)
        return XmlDocument(text), offset
    if marker == Marker.UNSUPPORTED:
        return None, offset
    if marker == Marker.TYPED_OBJECT:
        class_name, offset = _short_string(view, offset)
        typed: dict[str, Any] = {}
        offset = _properties(view, offset, typed, depth, lenient_end=False)
        return TypedObject(class_name, typed), offset
    if marker == Marker.AVMPLUS:
        raise ProtocolError("AMF3 values are not supported (objectEncoding 0 only)")
    if marker == Marker.OBJECT_END:
        raise ProtocolError("AMF0 object-end marker outside an object")
    raise ProtocolError(f"unsupported AMF0 type marker 0x{marker:02x}")


def _need(view: memoryview, offset: int, size: int) -> None:
    if offset + size > len(view):
        raise ProtocolError("AMF0 value truncated")


def _short_string(view: memoryview, offset: int) -> tuple[str, int]:
    _need(view, offset, 2)
    size = _U16.unpack_from(view, offset)[0]
    offset += 2
    _need(view, offset, size)
    return str(view[offset : offset + size], "utf-8", "replace"), offset + size


def _long_string(view: memoryview, offset: int) -> tuple[str, int]:
    _need(view, offset, 4)
    size = _U32.unpack_from(view, offset)[0]
    offset += 4
    _need(view, offset, size)
    return str(view[offset : offset + size], "utf-8", "replace"), offset + size


def _properties(
    view: memoryview, offset: int, into: dict[str, Any], depth: int, *, lenient_end: bool
) -> int:
    end = len(view)
    while True:
        if lenient_end and offset == end:
            # Some encoders end an ECMA array at the end of the message without the
            # end marker; the data can't mean anything else.
            return offset
        key, offset = _short_string(view, offset)
        if not key:
            _need(view, offset, 1)
            if view[offset] == Marker.OBJECT_END:
                return offset + 1
        value, offset = decode_value(view, offset, depth + 1)
        into[key] = value


def encode(*values: Any) -> bytes:
    """Encode values back to back, as a command or a data message carries them."""
    out = bytearray()
    for value in values:
        _encode_value(out, value, 0)
    return bytes(out)


def _encode_value(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"AMF0 values nested deeper than {MAX_DEPTH}")
    if value is None:
        out.append(Marker.NULL)
    elif value is UNDEFINED:
        out.append(Marker.UNDEFINED)
    elif isinstance(value, bool):
        out += bytes((Marker.BOOLEAN, 1 if value else 0))
    elif isinstance(value, int | float):
        out.append(Marker.NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, XmlDocument):
        raw = value.encode()
        out.append(Marker.XML_DOCUMENT)
        out += _U32.pack(len(raw)) + raw
    elif isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            out.append(Marker.LONG_STRING)
            out += _U32.pack(len(raw)) + raw
        else:
            out.append(Marker.STRING)
            out += _U16.pack(len(raw)) + raw
    elif isinstance(value, EcmaArray):
        out.append(Marker.ECMA_ARRAY)
        out += _U32.pack(len(value))
        _encode_properties(out, value, depth)
    elif isinstance(value, dict):
        out.append(Marker.OBJECT)
        _encode_properties(out, value, depth)
    elif isinstance(value, list | tuple):
        out.append(Marker.STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_value(out, item, depth + 1)
    elif isinstance(value, Date):
        out.append(Marker.DATE)
        out += _DATE.pack(value.milliseconds, value.timezone)
    elif isinstance(value, TypedObject):
        raw = value.class_name.encode()
        out.append(Marker.TYPED_OBJECT)
        out += _U16.pack(len(raw)) + raw
        _encode_properties(out, value.properties, depth)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def _encode_properties(out: bytearray, properties: dict[str, Any], depth: int) -> None:
    for key, item in properties.items():
        raw = str(key).encode()
        if len(raw) > 0xFFFF:
            raise ValueError("AMF0 property name longer than 65535 bytes")
        out += _U16.pack(len(raw)) + raw
        _encode_value(out, item, depth + 1)
    out += b"\x00\x00\x09"
