"""The RTMP chunk stream: de-chunking into messages, and chunking them again.

This is the hot path. The reader owns one fixed buffer per connection, which the
socket layer reads into directly (`get_buffer`/`buffer_updated`, as with asyncio's
BufferedProtocol). Chunk headers are parsed with offset arithmetic; nothing is
allocated per chunk. Media payloads of a publishing stream are skipped in place:
per media message the reader only bumps integer counters, judged from the first two
payload bytes. Messages that matter whole (commands, metadata, codec headers,
control) are copied once into a per-message bytearray and handed to `on_message`.

Limits are enforced as headers arrive, before anything is allocated: message size,
number of chunk streams, accepted chunk sizes.
"""

from __future__ import annotations

from collections.abc import Callable

from . import flv
from .counters import TIMESTAMP_JUMP_MS, MediaCounters
from .errors import ProtocolError

DEFAULT_CHUNK_SIZE = 128
MAX_HEADER_SIZE = 18  # 3-byte basic header + 11-byte message header + extended timestamp
_MEDIA_PEEK = 2  # payload bytes the hot path needs to classify a media message

MessageHandler = Callable[[int, int, int, bytearray], None]  # type_id, msid, timestamp, body


class ChunkStream:
    """The header state of one chunk stream id, reused by fmt 1/2/3 headers."""

    __slots__ = (
        "body",
        "csid",
        "delta",
        "ext_value",
        "extended",
        "has_header",
        "length",
        "msid",
        "remaining",
        "timestamp",
        "type_id",
    )

    def __init__(self, csid: int) -> None:
        self.csid = csid
        self.has_header = False
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.msid = 0
        self.extended = False
        self.ext_value = 0
        self.remaining = 0  # payload bytes still due for the current message; 0 = none open
        self.body: bytearray | None = None  # set while a collected message is assembled


class ChunkReader:
    def __init__(
        self,
        on_message: MessageHandler,
        *,
        buffer_size: int,
        max_chunk_streams: int,
        max_message_size: int,
        max_control_size: int,
    ) -> None:
        if buffer_size < 2048:
            raise ValueError("the read buffer must hold at least a handshake block")
        self.buf = bytearray(buffer_size)
        self.view = memoryview(self.buf)
        self.start = 0  # first unparsed byte
        self.end = 0  # one past the last byte received
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.streams: dict[int, ChunkStream] = {}
        self.paused = False  # set by on_message while the application must decide something
        self.publishing_msid = -1  # media on other message streams is dropped
        self.collect_media = False  # assemble media payloads too (relay, recording, tests)
        self.capture_keyframe = False  # assemble the next video keyframe (a thumbnail)
        self.counters = MediaCounters()
        self.discarded_messages = 0
        self._on_message = on_message
        self._max_chunk_streams = max_chunk_streams
        self._max_message_size = max_message_size
        self._max_control_size = max_control_size
        # Every partially assembled message of a connection together: one media
        # message and one control message's worth, however many chunk streams.
        self.max_held = max_message_size + max_control_size
        self._cur: ChunkStream | None = None  # chunk whose payload is being consumed
        self._left = 0  # payload bytes left in that chunk

    # Buffer management -------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Free space to receive into; empty only while paused with a full buffer."""
        if self.start == self.end:
            self.start = self.end = 0
        elif self.start and len(self.buf) - self.end < MAX_HEADER_SIZE + _MEDIA_PEEK + 1024:
            size = self.end - self.start
            self.buf[:size] = self.view[self.start : self.end]
            self.start, self.end = 0, size
        return self.view[self.end :]

    def resize(self, size: int) -> None:
        """A read buffer of ``size`` bytes, keeping the unparsed ones (never while parsing)."""
        pending = self.view[self.start : self.end]
        if len(pending) > size:
            raise ValueError("the new read buffer cannot hold the unparsed bytes")
        buf = bytearray(size)
        buf[: len(pending)] = pending
        self.buf, self.view = buf, memoryview(buf)
        self.start, self.end = 0, len(pending)

    def buffered(self) -> int:
        return self.end - self.start

    def take(self, size: int) -> bytes | None:
        """Consume exactly size raw bytes (handshake blocks), or None if not there yet."""
        if self.end - self.start < size:
            return None
        data = bytes(self.view[self.start : self.start + size])
        self.start += size
        return data

    # Parsing -----------------------------------------------------------------------

    def parse(self) -> None:
        """Consume whole chunks from the buffer until it runs dry or the reader pauses."""
        buf = self.buf
        view = self.view
        pos = self.start
        end = self.end
        cur = self._cur
        left = self._left
        chunk_size = self.chunk_size
        streams = self.streams
        counters = self.counters
        try:
            while not self.paused:
                if left:
                    # Payload of the current chunk: skip it, or append it to the message.
                    n = end - pos
                    if n <= 0:
                        break
                    if n > left:
                        n = left
                    assert cur is not None  # an invariant of this loop, not peer input
                    body = cur.body
                    if body is not None:
                        body += view[pos : pos + n]
                    pos += n
                    left -= n
                    cur.remaining -= n
                    if left:
                        break
                    if body is not None and not cur.remaining:
                        cur.body = None
                        self.start = pos
                        self._left = 0
                        self._on_message(cur.type_id, cur.msid, cur.timestamp, body)
                        chunk_size = self.chunk_size
                    continue

                # A chunk header. Nothing is consumed until all of it is here.
                avail = end - pos
                if avail < 1:
                    break
                b0 = buf[pos]
                fmt = b0 >> 6
                csid = b0 & 0x3F
                p = pos + 1
                if csid < 2:
                    if csid == 0:
                        if avail < 2:
                            break
                        csid = buf[p] + 64
                        p += 1
                    else:
                        if avail < 3:
                            break
                        csid = buf[p] + (buf[p + 1] << 8) + 64
                        p += 2
                cs = streams.get(csid)
                if cs is None:
                    if len(streams) >= self._max_chunk_streams:
                        raise ProtocolError(
                            f"more than {self._max_chunk_streams} chunk streams in use"
                        )
                    cs = streams[csid] = ChunkStream(csid)
                if fmt == 3 and cs.remaining:
                    # Continuation of an open message. Some writers repeat the extended
                    # timestamp here (as the spec says), some don't: skip it if it matches.
                    if cs.extended:
                        if end - p < 4:
                            break
                        if (
                            (buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]
                        ) == cs.ext_value:
                            p += 4
                    pos = p
                    cur = cs
                    left = cs.remaining if cs.remaining < chunk_size else chunk_size
                    continue

                if not cs.has_header and fmt:
                    raise ProtocolError(f"chunk stream {csid} starts with a type-{fmt} header")
                extended = False
                if fmt == 0:
                    if end - p < 11:
                        break
                    stamp = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
                    length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
                    type_id = buf[p + 6]
                    msid = buf[p + 7] | (buf[p + 8] << 8) | (buf[p + 9] << 16) | (buf[p + 10] << 24)
                    p += 11
                elif fmt == 1:
                    if end - p < 7:
                        break
                    stamp = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
                    length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
                    type_id = buf[p + 6]
                    msid = cs.msid
                    p += 7
                elif fmt == 2:
                    if end - p < 3:
                        break
                    stamp = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
                    length = cs.length
                    type_id = cs.type_id
                    msid = cs.msid
                    p += 3
                else:
                    # A new message with every header field of the previous one.
                    stamp = cs.ext_value if cs.extended else cs.delta
                    length = cs.length
                    type_id = cs.type_id
                    msid = cs.msid
                    extended = cs.extended
                    if extended:
                        if end - p < 4:
                            break
                        stamp = (buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]
                        p += 4
                if stamp == 0xFFFFFF and fmt != 3:
                    if end - p < 4:
                        break
                    stamp = (buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]
                    p += 4
                    extended = True
                peek = length if length < _MEDIA_PEEK else _MEDIA_PEEK
                if end - p < peek and (type_id == 8 or type_id == 9):
                    break

                # The whole header is here: commit it.
                if cs.remaining:
                    # A new header while a message was still open: the writer gave up on
                    # it (as after an Abort). Drop the partial message.
                    cs.body = None
                    self.discarded_messages += 1
                if fmt == 0:
                    timestamp = stamp
                    cs.delta = stamp  # a following type-3 message adds it again (spec 5.3.1.2.4)
                else:
                    timestamp = (cs.timestamp + stamp) & 0xFFFFFFFF
                    cs.delta = stamp
                cs.has_header = True
                cs.timestamp = timestamp
                cs.length = length
                cs.type_id = type_id
                cs.msid = msid
                cs.extended = extended
                cs.ext_value = stamp if extended else 0
                cs.remaining = length
                pos = p
                if not length:
                    continue

                if type_id == 9 or type_id == 8:
                    if length > self._max_message_size:
                        raise ProtocolError(
                            f"media message of {length} bytes exceeds the limit of "
                            f"{self._max_message_size}"
                        )
                    if msid != self.publishing_msid:
                        counters.ignored_messages += 1
                    elif self.collect_media:
                        self._hold(cs, length)
                    else:
                        b0 = buf[p]
                        b1 = buf[p + 1] if length > 1 else -1
                        if type_id == 9:
                            counters.video_messages += 1
                            counters.video_bytes += length
                            if b1 == 1 and (b0 == 0x27 or b0 == 0x17):  # H.264 coded frame
                                action = flv.KEYFRAME if b0 == 0x17 else flv.FRAME
                            else:
                                action = flv.classify_video(b0, b1)
                            if action == flv.KEYFRAME and self.capture_keyframe:
                                action = flv.COLLECT  # the connection counts it, whole
                            if action == flv.FRAME or action == flv.KEYFRAME:
                                counters.video_frames += 1
                                last = counters.last_video_ts
                                if timestamp < last:
                                    counters.timestamp_regressions += 1
                                elif timestamp > last + TIMESTAMP_JUMP_MS and last >= 0:
                                    counters.timestamp_jumps += 1
                                counters.last_video_ts = timestamp
                                if action == flv.KEYFRAME:
                                    counters.keyframes += 1
                                    counters.last_keyframe_ts = timestamp
                            elif action == flv.COLLECT:
                                self._hold(cs, length)
                        else:
                            counters.audio_messages += 1
                            counters.audio_bytes += length
                            if b1 == 1 and b0 >> 4 == 10:  # raw AAC frame
                                action = flv.FRAME
                            else:
                                action = flv.classify_audio(b0, b1)
                            if action == flv.FRAME:
                                counters.audio_frames += 1
                                last = counters.last_audio_ts
                                if timestamp < last:
                                    counters.timestamp_regressions += 1
                                elif timestamp > last + TIMESTAMP_JUMP_MS and last >= 0:
                                    counters.timestamp_jumps += 1
                                counters.last_audio_ts = timestamp
                            elif action == flv.COLLECT:
                                self._hold(cs, length)
                else:
                    limit = self._max_message_size if type_id == 22 else self._max_control_size
                    if length > limit:
                        raise ProtocolError(
                            f"message of type {type_id} and {length} bytes exceeds the "
                            f"limit of {limit}"
                        )
                    if type_id == 22 and msid != self.publishing_msid:
                        # An aggregate is media: off the publishing stream it is dropped, so
                        # don't hold up to max_message_size of it per chunk stream first.
                        counters.ignored_messages += 1
                    else:
                        self._hold(cs, length)
                cur = cs
                left = length if length < chunk_size else chunk_size
        finally:
            self.start = pos
            self._cur = cur
            self._left = left

    def abort(self, csid: int) -> None:
        """Abort message: drop the partial message on a chunk stream."""
        cs = self.streams.get(csid)
        if cs is not None and cs.remaining:
            if self._cur is cs:
                self._cur = None
                self._left = 0
            cs.remaining = 0
            cs.body = None
            self.discarded_messages += 1

    def _hold(self, cs: ChunkStream, length: int) -> None:
        """Start assembling a message, within the connection's budget for partial ones.

        Not on the media path: only commands, codec configurations and aggregates
        are assembled, so summing a few chunk streams here costs nothing that counts.
        """
        held = length
        for other in self.streams.values():
            if other.body is not None and other is not cs:
                held += other.length
        if held > self.max_held:
            raise ProtocolError(
                f"partial messages of {held} bytes exceed the limit of {self.max_held}"
            )
        cs.body = bytearray()

    def buffered_message_bytes(self) -> int:
        """Bytes held in partially assembled messages (for memory bounds)."""
        return sum(len(cs.body) for cs in self.streams.values() if cs.body is not None)


def basic_header(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes(((fmt << 6) | csid,))
    if 64 <= csid <= 319:
        return bytes((fmt << 6, csid - 64))
    if 320 <= csid <= 65599:
        value = csid - 64
        return bytes(((fmt << 6) | 1, value & 0xFF, value >> 8))
    raise ValueError(f"chunk stream id {csid} out of range")


class _Sent:
    __slots__ = ("delta", "length", "msid", "timestamp", "type_id")

    def __init__(self, msid: int, timestamp: int, delta: int | None, length: int, type_id: int):
        self.msid = msid
        self.timestamp = timestamp
        self.delta = delta
        self.length = length
        self.type_id = type_id


class ChunkWriter:
    """Splits messages into chunks, compressing headers the way FFmpeg does.

    After a type-0 header the next message never uses type 3: readers disagree on
    what delta a type-3 message adds after a type-0 one (nginx adds 0, the spec and
    FFmpeg add the absolute timestamp), so we never ask them.
    """

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._sent: dict[int, _Sent] = {}

    def write(
        self,
        out: bytearray,
        csid: int,
        type_id: int,
        msid: int,
        timestamp: int,
        payload: bytes | bytearray | memoryview,
    ) -> None:
        timestamp &= 0xFFFFFFFF
        length = len(payload)
        if length > 0xFFFFFF:
            raise ValueError("RTMP messages are limited to 16 MiB")
        prev = self._sent.get(csid)
        if prev is None or prev.msid != msid or timestamp < prev.timestamp:
            fmt, field, delta = 0, timestamp, None
        else:
            field = delta = timestamp - prev.timestamp
            if length != prev.length or type_id != prev.type_id:
                fmt = 1
            elif delta == prev.delta:
                fmt = 3
            else:
                fmt = 2
        self._sent[csid] = _Sent(msid, timestamp, delta, length, type_id)
        extended = field >= 0xFFFFFF
        ext = field.to_bytes(4, "big") if extended else b""
        stamp = (0xFFFFFF if extended else field).to_bytes(3, "big")
        out += basic_header(fmt, csid)
        if fmt == 0:
            out += stamp + length.to_bytes(3, "big") + bytes((type_id,))
            out += msid.to_bytes(4, "little")
        elif fmt == 1:
            out += stamp + length.to_bytes(3, "big") + bytes((type_id,))
        elif fmt == 2:
            out += stamp
        out += ext
        size = self.chunk_size
        view = memoryview(payload)
        out += view[:size]
        if length > size:
            continuation = basic_header(3, csid) + ext
            for offset in range(size, length, size):
                out += continuation
                out += view[offset : offset + size]
