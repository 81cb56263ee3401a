"""A recording's FLV file: its first bytes, its tags, and how a file cut short is made whole.

Every part starts with the FLV header and an onMetaData tag whose first two entries
are ``duration`` and ``filesize``: numbers at fixed offsets, written as 0 and patched
in place when the part is finished, so players (ffprobe, browsers) know its length
without reading to the end. Then tags in order, each followed by its size: a file cut
short by a crash is whole up to its last complete tag, and `repair` trims the rest
and patches the two numbers from what is there.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..rtmp import amf0
from ..rtmp.flvfile import TAG_HEADER, header, tag_head, tag_tail

AUDIO, VIDEO, DATA = 8, 9, 18
HEADER_SIZE = 13  # the 9-byte header, then PreviousTagSize0
_NAME = amf0.encode("onMetaData")
# Offsets in the file: header, tag header, "onMetaData", ECMA array marker and count,
# then each key (16-bit length, name) and the number's marker.
DURATION_AT = HEADER_SIZE + TAG_HEADER + len(_NAME) + 5 + 2 + len("duration") + 1
FILESIZE_AT = DURATION_AT + 8 + 2 + len("filesize") + 1
_DOUBLE = struct.Struct(">d")
# What the source's onMetaData may not bring along: ours come first, and the rest
# (a file of its own, not the stream) does not describe a recording.
_OURS = frozenset(("duration", "filesize"))


def file_start(metadata: dict[str, Any], *, audio: bool, video: bool) -> bytes:
    """The header and onMetaData: the source's entries after duration and filesize (0 for now)."""
    entries: dict[str, Any] = {"duration": 0.0, "filesize": 0.0}
    entries.update((k, v) for k, v in metadata.items() if isinstance(k, str) and k not in _OURS)
    try:
        body = amf0.encode("onMetaData", amf0.EcmaArray(entries))
    except (TypeError, ValueError):  # something of the peer's we cannot write back
        body = amf0.encode("onMetaData", amf0.EcmaArray({"duration": 0.0, "filesize": 0.0}))
    head = header(audio=audio, video=video) + tag_head(DATA, 0, len(body))
    return head + body + tag_tail(len(body))


def patch(fd: int, *, duration_ms: int, size: int) -> None:
    """Write the finished part's duration (seconds) and size into its onMetaData."""
    os.pwrite(fd, _DOUBLE.pack(duration_ms / 1000), DURATION_AT)
    os.pwrite(fd, _DOUBLE.pack(float(size)), FILESIZE_AT)


def has_placeholders(start: bytes) -> bool:
    """Whether a file begins the way `file_start` writes it (so `patch` may write into it)."""
    if len(start) < FILESIZE_AT + 8 or start[:3] != b"FLV":
        return False
    return (
        start[HEADER_SIZE + TAG_HEADER : HEADER_SIZE + TAG_HEADER + len(_NAME)] == _NAME
        and start[DURATION_AT - 11 : DURATION_AT - 1] == b"\x00\x08duration"
        and start[FILESIZE_AT - 11 : FILESIZE_AT - 1] == b"\x00\x08filesize"
    )


@dataclass(frozen=True, slots=True)
class Repaired:
    size: int  # bytes kept
    duration_ms: int  # the last media tag's time
    media_tags: int
    trimmed: int  # bytes of a cut-off last tag, removed


def repair(path: Path) -> Repaired:
    """Trim a part left unfinished (a crash) to its last whole tag, and patch its numbers.

    Reads tag headers only (seeks over payloads), so a large file costs little. A
    file that does not start as ours is measured and left as it is.
    """
    with path.open("r+b") as file:
        start = file.read(FILESIZE_AT + 8)
        total = os.fstat(file.fileno()).st_size
        if len(start) < HEADER_SIZE or start[:3] != b"FLV":
            return Repaired(total, 0, 0, 0)
        pos, last_ms, media = HEADER_SIZE, 0, 0
        while pos + TAG_HEADER <= total:
            file.seek(pos)
            head = file.read(TAG_HEADER)
            size = int.from_bytes(head[1:4], "big")
            end = pos + TAG_HEADER + size + 4
            if end > total:
                break
            if head[0] & 0x1F in (AUDIO, VIDEO):
                media += 1
                last_ms = max(last_ms, int.from_bytes(head[4:7], "big") | head[7] << 24)
            pos = end
        trimmed = total - pos
        if trimmed:
            file.truncate(pos)
        if has_placeholders(start):
            patch(file.fileno(), duration_ms=last_ms, size=pos)
        file.flush()
        os.fsync(file.fileno())
    return Repaired(pos, last_ms, media, trimmed)
