"""Live playback for a stream's owner: HTTP-FLV from the ingest node that holds it.

Nothing is spent while nobody watches. A channel's first reader turns on the core's
media delivery for its connection (``collect_media``); each media message then
becomes one FLV tag, appended to every reader's queue. A queue is bounded in bytes:
a reader that falls that far behind is dropped (its response ends), never waited
for, so a slow viewer slows neither the publisher nor the other viewers. While
readers exist the tags since the last keyframe are kept (the GOP, bounded too), so
a reader that joins starts at once with a picture; until a GOP is kept, a new reader
waits for the next keyframe. The last reader to leave turns delivery off and the
GOP goes with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..rtmp import amf0, flv
from ..rtmp.flvfile import header as flv_header
from ..rtmp.flvfile import tag as flv_tag

if TYPE_CHECKING:
    from .outputs import Sink
    from .protocol import RtmpProtocol
    from .server import IngestServer

log = logging.getLogger("stream_sync.ingest")

AUDIO, VIDEO, DATA = 8, 9, 18  # FLV tag types, the same numbers as RTMP's message types


@dataclass(frozen=True, slots=True)
class PlaybackLimits:
    readers_per_stream: int = 4
    readers: int = 64  # on this ingest process
    queue_bytes: int = 8 * 1024 * 1024  # per reader: about 14 s of a 4.5 Mbit/s stream
    gop_bytes: int = 16 * 1024 * 1024  # a longer GOP is not kept: joiners wait for a keyframe


class PlaybackRefused(Exception):
    """Why a reader cannot start (not live here, too many readers); safe to show."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status that says it


def _keyframe(payload: bytes) -> bool:
    return len(payload) > 1 and flv.classify_video(payload[0], payload[1]) == flv.KEYFRAME


class Reader:
    """One viewer's bytes, in order, bounded; its response reads them with ``chunks``."""

    def __init__(self, limit: int, broadcast: Broadcast | None = None) -> None:
        self.broadcast = broadcast
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._limit = limit
        self._ready = asyncio.Event()
        self.ended: str | None = None  # why the stream to this reader ended
        self.base: int | None = None  # the media timestamp this reader's time 0 stands for

    def send(self, data: bytes) -> None:
        if self.ended is not None:
            return
        if self._queued + len(data) > self._limit:
            self.end("fell behind")
            return
        self._chunks.append(data)
        self._queued += len(data)
        self._ready.set()

    def end(self, why: str) -> None:
        if self.ended is None:
            self.ended = why
            self._chunks.clear()
            self._queued = 0
        self._ready.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        """What was sent, as it comes, joined per wake-up; ends when the reader ends."""
        while True:
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._queued = 0
                yield data
            elif self.ended is not None:
                return
            else:
                self._ready.clear()
                await self._ready.wait()


class Broadcast:
    """One live publish's readers and sinks, and the GOP that lets a new reader start at once.

    Sinks (pushes, the recording: outputs.py) get every message with its keyframe
    flag; the GOP is kept only while readers exist.
    """

    def __init__(self, proto: RtmpProtocol, limits: PlaybackLimits) -> None:
        self.proto = proto
        self.readers: set[Reader] = set()
        self.sinks: list[Sink] = []
        self._limits = limits
        self._gop: list[tuple[int, int, bytes]] = []  # (type, timestamp, payload) from a keyframe
        self._gop_bytes = 0
        self._gop_whole = False  # the kept tags start at a keyframe

    def join(self, reader: Reader) -> None:
        """The header, metadata and codec records at time 0, then the GOP kept so far."""
        proto = self.proto
        video, audio = proto.video_sequence, proto.audio_sequence
        reader.send(flv_header(audio=audio is not None, video=video is not None))
        if proto.metadata:
            meta = amf0.encode("onMetaData", amf0.EcmaArray(proto.metadata))
            reader.send(flv_tag(DATA, 0, meta))
        for type_id, record in ((VIDEO, video), (AUDIO, audio)):
            if record is not None:
                reader.send(flv_tag(type_id, 0, record))
        if self._gop_whole and self._gop:
            reader.base = self._gop[0][1]
            for type_id, timestamp, payload in self._gop:
                reader.send(flv_tag(type_id, max(0, timestamp - reader.base), payload))
        self.readers.add(reader)

    def media(self, type_id: int, timestamp: int, payload: bytes) -> None:
        keyframe = type_id == VIDEO and _keyframe(payload)
        for sink in self.sinks:
            sink.media(type_id, timestamp, payload, keyframe)
        if not self.readers:
            return
        if keyframe:
            self._gop.clear()
            self._gop_bytes, self._gop_whole = 0, True
        if self._gop_whole:
            self._gop.append((type_id, timestamp, payload))
            self._gop_bytes += len(payload)
            if self._gop_bytes > self._limits.gop_bytes:
                self._gop.clear()
                self._gop_bytes, self._gop_whole = 0, False
        for reader in list(self.readers):
            if reader.base is None:
                if not keyframe:
                    continue  # a reader starts with a picture
                reader.base = timestamp
            reader.send(flv_tag(type_id, max(0, timestamp - reader.base), payload))
            if reader.ended is not None:
                self.leave(reader)

    def leave(self, reader: Reader) -> None:
        """The last reader to go turns media delivery off and drops the GOP."""
        reader.end("closed")
        if reader not in self.readers:
            return
        self.readers.discard(reader)
        log.info(
            "conn=%s playback viewer left (%s), %d watching",
            self.proto.id,
            reader.ended,
            len(self.readers),
        )
        if not self.readers:
            self._gop.clear()
            self._gop_bytes, self._gop_whole = 0, False
            if not self.sinks and self.proto.broadcast is self:
                self.proto.broadcast = None
                self.proto.conn.collect_media = False

    def end(self, why: str) -> None:
        """The publish ended: every reader's response ends, the sinks hear no more."""
        self.sinks.clear()
        for reader in list(self.readers):
            reader.end(why)
            self.leave(reader)


class PlaybackHub:
    """The readers of every stream this ingest process holds."""

    def __init__(self, server: IngestServer, limits: PlaybackLimits | None = None) -> None:
        self._server = server
        self.limits = limits or PlaybackLimits()

    def holds(self, channel_id: int) -> bool:
        return self._publisher(channel_id) is not None

    def open(self, channel_id: int) -> Reader:
        proto = self._publisher(channel_id)
        if proto is None:
            raise PlaybackRefused("the channel is not live on this node", 404)
        if self.readers() >= self.limits.readers:
            raise PlaybackRefused("too many viewers on this node")
        broadcast = proto.broadcast
        if broadcast is None:
            broadcast = proto.broadcast = Broadcast(proto, self.limits)
            proto.conn.collect_media = True
        elif len(broadcast.readers) >= self.limits.readers_per_stream:
            raise PlaybackRefused("too many viewers of this stream")
        reader = Reader(self.limits.queue_bytes, broadcast)
        broadcast.join(reader)
        log.info("conn=%s playback viewer joined, %d watching", proto.id, len(broadcast.readers))
        return reader

    def close(self, reader: Reader) -> None:
        """The reader went away (its response ended, or the viewer left)."""
        if reader.broadcast is not None:
            reader.broadcast.leave(reader)

    def readers(self) -> int:
        return sum(
            len(p.broadcast.readers) for p in self._server.publishers.values() if p.broadcast
        )

    def _publisher(self, channel_id: int) -> RtmpProtocol | None:
        for proto in self._server.publishers.values():
            grant = proto.grant
            if grant is not None and grant.channel_id == channel_id and not proto.conn.closing:
                return proto
        return None
