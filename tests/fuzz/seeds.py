"""Seed inputs for every fuzz target, cut from the real captures: `python -m tests.fuzz.seeds DIR`.

Writes DIR/<target>/<name> for each target. `make fuzz-corpus` then keeps the
subset that covers something new (libFuzzer's -merge=1) in tests/fuzz/corpus/.
Seeds start the fuzzer where real encoders are (their handshakes, connect and
publish sequences, metadata, codec records), so it needs no luck to get there.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from stream_sync.rtmp.chunk import ChunkReader

from .run import MAX_LEN
from .targets import CAPTURES, HANDSHAKE

# Connection headers (targets.py): default limits and whole reads; random reads with
# collected media; small limits with an accept-then-end publish; a refused publish
# after two reads; a refused connect; receive_data() with a publish decided late.
HEADERS = (b"\0\0\0", b"\2\0\7", b"\1\4\3", b"\0\x2c\0", b"\0\3\0", b"\x08\x30\x05")
CODEC_RECORDS = CAPTURES.parent / "codec_records.json"
AMF_TYPES = {18: 0, 20: 0, 15: 1, 17: 1}  # data/command messages, with AMF0's offset
MEDIA_PER_CAPTURE = 12  # the first few media messages: sequence starts and frames


def captures() -> list[str]:
    return sorted(path.name.removesuffix(".c2s.bin") for path in CAPTURES.glob("*.c2s.bin"))


def messages(data: bytes) -> list[tuple[int, bytes]]:
    """One direction of a capture, after its handshake, as (type id, body)."""
    found: list[tuple[int, bytes]] = []

    def on_message(type_id: int, msid: int, timestamp: int, body: bytearray) -> None:
        if type_id == 1 and len(body) >= 4:
            reader.chunk_size = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
        found.append((type_id, bytes(body)))

    reader = ChunkReader(
        on_message,
        buffer_size=1 << 16,
        max_chunk_streams=1 << 17,
        max_message_size=0xFFFFFF,
        max_control_size=0xFFFFFF,
    )
    reader.collect_media = True
    reader.publishing_msid = 1  # every captured client publishes on message stream 1
    view = memoryview(data)[HANDSHAKE:]
    while view:
        space = reader.get_buffer()
        n = min(len(space), len(view))
        space[:n] = view[:n]
        view = view[n:]
        reader.end += n
        reader.parse()
    return found


def flv_sequence_start(media: str, fourcc: str, record: bytes) -> bytes:
    """A media target input: the selector byte, then a sequence start tag around record."""
    if media == "audio":
        header = b"\xaf\x00" if fourcc == "mp4a" else b"\x90" + fourcc.encode()
        return b"\x01" + header + record
    legacy = b"\x17\x00\x00\x00\x00" if fourcc == "avc1" else b"\x1c\x00\x00\x00\x00"
    enhanced = b"\x90" + fourcc.encode()
    return b"\x00" + (legacy if fourcc in ("avc1", "hvc1") else enhanced) + record


def seeds() -> Iterator[tuple[str, str, bytes]]:
    """(target, name, input) for every seed."""
    for name in captures():
        c2s = (CAPTURES / f"{name}.c2s.bin").read_bytes()
        s2c = (CAPTURES / f"{name}.s2c.bin").read_bytes()
        for i, header in enumerate(HEADERS):
            yield "server", f"{name}-{i}", (header + c2s)[: MAX_LEN["server"]]
            body = header + c2s[HANDSHAKE:]
            yield "session", f"{name}-{i}", body[: MAX_LEN["session"]]
        media = 0
        for direction, data in (("c2s", c2s), ("s2c", s2c)):
            for n, (type_id, body) in enumerate(messages(data)):
                if type_id in AMF_TYPES:
                    amf = body[AMF_TYPES[type_id] :]
                    yield "amf0", f"{name}-{direction}-{n}", amf[: MAX_LEN["amf0"]]
                elif type_id in (8, 9) and body and media < MEDIA_PER_CAPTURE:
                    media += 1
                    selector = b"\x00" if type_id == 9 else b"\x01"
                    yield "media", f"{name}-{n}", (selector + body)[: MAX_LEN["media"]]
    for record in json.loads(CODEC_RECORDS.read_text())["records"]:
        data = flv_sequence_start(
            record["media"], record["fourcc"], bytes.fromhex(record["record"])
        )
        yield "media", f"record-{record['name']}", data[: MAX_LEN["media"]]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.fuzz.seeds DIR")
    root = Path(sys.argv[1])
    for target, name, data in seeds():
        (root / target).mkdir(parents=True, exist_ok=True)
        (root / target / name).write_bytes(data)


if __name__ == "__main__":
    main()
