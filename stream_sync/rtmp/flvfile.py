"""FLV files: tags back to back after the header, each with its back pointer.

Not the wire. Read: files made by FFmpeg (the built-in warm-up stream, test vectors).
Written: the owner's playback (ingest/playback.py) and recordings (ingest/recording.py).
"""

from __future__ import annotations

import struct

TAG_HEADER = 11  # type, 24-bit size, 24-bit time and its high byte, 24-bit stream id
_TAG_HEAD = struct.Struct(">II3x")
_SIZE = struct.Struct(">I")


def header(*, audio: bool, video: bool) -> bytes:
    """The 9-byte file header and PreviousTagSize0."""
    flags = (4 if audio else 0) | (1 if video else 0)
    return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


def tag_head(type_id: int, timestamp: int, size: int) -> bytes:
    """A tag's 11 bytes: type, 24-bit size, 24-bit time and its high byte, stream id 0."""
    ts = timestamp & 0xFFFFFFFF
    return _TAG_HEAD.pack(type_id << 24 | size, (ts & 0xFFFFFF) << 8 | ts >> 24)


def tag_tail(size: int) -> bytes:
    """PreviousTagSize: what follows a tag whose payload has ``size`` bytes."""
    return _SIZE.pack(TAG_HEADER + size)


def tag(type_id: int, timestamp: int, payload: bytes) -> bytes:
    """One whole tag: its head, the payload, its PreviousTagSize."""
    return tag_head(type_id, timestamp, len(payload)) + payload + tag_tail(len(payload))


def read_tags(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, timestamp in ms, payload) of each tag; a truncated last tag is left out."""
    if data[:3] != b"FLV" or len(data) < 9:
        raise ValueError("not an FLV file")
    pos = int.from_bytes(data[5:9], "big") + 4  # the header, then PreviousTagSize0
    tags = []
    while pos + TAG_HEADER <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        stamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        body = pos + TAG_HEADER
        if body + size > len(data):
            break
        tags.append((data[pos] & 0x1F, stamp, data[body : body + size]))
        pos = body + size + 4  # the payload, then PreviousTagSize
    return tags
