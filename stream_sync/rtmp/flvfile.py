"""Reading FLV files: tags back to back after the header, each with its back pointer.

Not the wire: files made by FFmpeg (the built-in warm-up stream, test vectors). The
writer side, for playback, is ingest/playback.py's ``flv_header`` and ``flv_tag``.
"""

from __future__ import annotations

TAG_HEADER = 11  # type, 24-bit size, 24-bit time and its high byte, 24-bit stream id


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
