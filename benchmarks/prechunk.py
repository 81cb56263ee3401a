"""The sample stream, chunked once into the exact bytes a publisher puts on the wire.

A load generator that chunks every message as it sends it spends as much Python per
message as the server it measures. Here all of that happens once, at load time, with
the same ChunkWriter the product's own client uses (header compression as FFmpeg
does it: type 0 for the first message of a chunk stream, then types 1, 2 and 3). At
run time a publisher only hands ready-made `bytes` to its transport.

Looping: every header after a chunk stream's first one carries a timestamp *delta*,
so the bytes of a replay are the same on every pass through the file except for the
few type-0 headers, which carry absolute timestamps. Those messages are kept apart
and re-chunked per pass with the pass's time offset (a few per 20 s pass); all other
bytes are shared by every pass and every publisher of the process.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_sync.rtmp import amf0
from stream_sync.rtmp.chunk import ChunkWriter
from stream_sync.rtmp.client import CSID_AUDIO, CSID_DATA, CSID_VIDEO
from stream_sync.rtmp.messages import MessageType

from .flvfile import TAG_VIDEO, FlvStream, Tag

PIECE_SIZE = 256 * 1024  # what the as-fast-as-possible mode hands the transport per write


@dataclass(frozen=True, slots=True)
class Absolute:
    """A message whose type-0 header carries its absolute timestamp: re-chunked per pass."""

    csid: int
    type_id: int
    timestamp: int
    payload: bytes


Part = bytes | Absolute


def _csid(tag: Tag) -> int:
    return CSID_VIDEO if tag.type_id == TAG_VIDEO else CSID_AUDIO


class Replay:
    """One stream's chunk bytes for one chunk size and one message stream id."""

    def __init__(self, stream: FlvStream, *, chunk_size: int, msid: int, batch_ms: int) -> None:
        if batch_ms < 1:
            raise ValueError("batch_ms must be at least 1")
        self.chunk_size = chunk_size
        self.msid = msid
        self.batch_ms = batch_ms
        self.duration_ms = stream.duration_ms
        self.preamble = self._preamble(stream)
        self._trailer = [
            Absolute(_csid(tag), tag.type_id, tag.timestamp, tag.payload) for tag in stream.trailer
        ]
        messages = self._messages(stream.frames)
        self.batches = self._batches(messages)  # (first timestamp, parts), in time order
        self._pieces = self._split(messages)
        self._cache: dict[tuple[int, int], bytes] = {}

    # Load time ----------------------------------------------------------------------

    def _chunk(
        self, writer: ChunkWriter, csid: int, type_id: int, ts: int, payload: bytes
    ) -> bytes:
        out = bytearray()
        writer.write(out, csid, type_id, self.msid, ts, payload)
        return bytes(out)

    def _fresh_writer(self) -> ChunkWriter:
        writer = ChunkWriter()
        writer.chunk_size = self.chunk_size
        return writer

    def _preamble(self, stream: FlvStream) -> bytes:
        """What an encoder sends once after Publish.Start: metadata, then codec headers."""
        writer = self._fresh_writer()
        out = b""
        if stream.metadata:
            payload = amf0.encode("@setDataFrame") + stream.metadata
            out += self._chunk(writer, CSID_DATA, MessageType.DATA_AMF0, 0, payload)
        for tag in stream.headers:
            out += self._chunk(writer, _csid(tag), tag.type_id, tag.timestamp, tag.payload)
        return out

    def _messages(self, frames: list[Tag]) -> list[tuple[int, Part]]:
        """Every frame chunked by one writer (one pass); type-0 ones kept as Absolute."""
        writer = self._fresh_writer()
        messages: list[tuple[int, Part]] = []
        for tag in frames:
            data = self._chunk(writer, _csid(tag), tag.type_id, tag.timestamp, tag.payload)
            if data[0] >> 6 == 0:
                part: Part = Absolute(_csid(tag), tag.type_id, tag.timestamp, tag.payload)
            else:
                part = data
            messages.append((tag.timestamp, part))
        return messages

    def _batches(self, messages: list[tuple[int, Part]]) -> list[tuple[int, list[Part]]]:
        """Messages grouped per batch_ms of media time, neighbours' bytes joined."""
        grouped: list[tuple[int, list[Part]]] = []
        current = -1
        for ts, part in messages:
            slot = ts // self.batch_ms
            if slot != current:
                grouped.append((ts, []))
                current = slot
            grouped[-1][1].append(part)
        return [(ts, _join(parts)) for ts, parts in grouped]

    def _split(self, messages: list[tuple[int, Part]]) -> list[Part]:
        """One pass as write-sized pieces (the as-fast-as-possible mode).

        A piece is whole messages, about PIECE_SIZE bytes of them: the sender may stop
        after any piece and still end on a message boundary, so its closing commands
        are not read as the rest of a half-sent chunk.
        """
        pieces: list[Part] = []
        run: list[bytes] = []
        size = 0
        for _, part in messages:
            if isinstance(part, Absolute):
                pieces.extend(_join(list[Part](run)))
                pieces.append(part)
                run, size = [], 0
                continue
            run.append(part)
            size += len(part)
            if size >= PIECE_SIZE:
                pieces.extend(_join(list[Part](run)))
                run, size = [], 0
        pieces.extend(_join(list[Part](run)))
        return pieces

    # Run time -----------------------------------------------------------------------

    def _absolute(self, part: Absolute, offset_ms: int) -> bytes:
        ts = part.timestamp + offset_ms
        return self._chunk(self._fresh_writer(), part.csid, part.type_id, ts, part.payload)

    def batch(self, loop: int, index: int) -> bytes:
        """Batch `index` of pass `loop`, timestamps shifted by loop * duration_ms."""
        parts = self.batches[index][1]
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]  # the same bytes on every pass
        key = (loop, index)
        data = self._cache.get(key)
        if data is None:
            offset = loop * self.duration_ms
            data = b"".join(p if isinstance(p, bytes) else self._absolute(p, offset) for p in parts)
            self._cache[key] = data
        return data

    def pieces(self, loop: int) -> list[bytes]:
        """Pass `loop` of the whole file as write-sized pieces."""
        offset = loop * self.duration_ms
        return [p if isinstance(p, bytes) else self._absolute(p, offset) for p in self._pieces]

    def trailer(self, loop: int) -> bytes:
        """End of sequence after pass `loop`: sent only when a publisher ends a pass."""
        offset = loop * self.duration_ms
        return b"".join(self._absolute(part, offset) for part in self._trailer)

    def bytes_per_pass(self) -> int:
        return sum(len(p) for p in self.pieces(0))


def _join(parts: list[Part]) -> list[Part]:
    """Neighbouring plain bytes joined into one object (fewer, larger writes)."""
    joined: list[Part] = []
    run: list[bytes] = []
    for part in parts:
        if isinstance(part, bytes):
            run.append(part)
            continue
        if run:
            joined.append(b"".join(run))
            run = []
        joined.append(part)
    if run:
        joined.append(b"".join(run))
    return joined
