"""Recording live streams to FLV files: the `Sink` that writes a channel's stream to
disk on the node that holds it (the channel's record switch, outputs.py).

One file per session, in parts: a part ends at the first keyframe past
``recording_max_seconds``, or at the keyframe after which the largest GOP seen so far
(and a quarter more) would not fit in ``recording_max_bytes``. It never grows past
the size limit: a frame that would not fit ends it there, and the next part starts
at the next keyframe. Each part starts with the header, onMetaData (its duration and
size patched in at the end: recordings/flv.py), the codec records and a keyframe.
An encoder that reconnects within grace goes on in the same part, from its next
keyframe, with time going on across the gap.

The event loop never waits for the disk. Tags are collected in memory and written
by one thread per process, in order, every 0.25 s (or every MiB): a crash loses at
most that much, and leaves a file that is whole up to its last tag. What waits for
the disk is bounded per recording; past the bound the recording skips to a keyframe
once the disk has caught up, and counts it. Rows (recordings/rows.py) are written by
tasks of their own: a database that is away costs rows, never media.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..background import Background
from ..db.models import utcnow
from ..recordings import files, flv
from ..recordings.rows import PartEnd, PartRow, RecordingStatus, finish_part, start_part
from ..rtmp import flv as codecs
from ..rtmp import flvfile
from ..rtmp.flvfile import TAG_HEADER
from ..state.inprocess import LogThrottle
from .outputs import Timeline

if TYPE_CHECKING:
    from .protocol import RtmpProtocol

log = logging.getLogger("stream_sync.recording")

T = TypeVar("T")
AUDIO, VIDEO = flv.AUDIO, flv.VIDEO
FLUSH_EVERY = 0.25  # seconds between writes: what a crash of the process can lose
FLUSH_BYTES = 1024 * 1024  # or sooner, once this much is waiting
BEHIND_BYTES = 8 * 1024 * 1024  # per recording, not yet on disk: past it, skip to a keyframe
DB_TIMEOUT = 10.0  # a row write that takes longer is given up (and logged)
try:
    IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (ValueError, OSError, AttributeError):
    IOV_MAX = 1024


@dataclass(frozen=True, slots=True)
class RecordingLimits:
    max_bytes: int = 4 * 1024**3
    max_seconds: float = 6 * 3600.0
    behind_bytes: int = BEHIND_BYTES


class DiskWriter:
    """The one thread that writes every recording of this process, jobs in the order given."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="recording")

    def run(self, job: Any, *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self._executor, job, *args)

    def close(self) -> None:
        """After the last job: waits for it (a blocking call)."""
        self._executor.shutdown(wait=True)


class PartFile:
    """One part on disk. Only the writer thread touches it, in the order jobs were given."""

    __slots__ = ("error", "fd", "path", "written")

    def __init__(self) -> None:
        self.fd: int | None = None
        self.path: str | None = None  # relative to the recordings folder
        self.error: str | None = None
        self.written = 0

    def open(
        self, folder: Path, channel_id: int, name: str, started: datetime, part: int, start: bytes
    ) -> str:
        try:
            self.fd, self.path = files.create_part(folder, channel_id, name, started, part)
        except OSError as exc:
            self.error = exc.strerror or type(exc).__name__
            raise
        self.write([start])
        return self.path

    def write(self, pieces: list[bytes]) -> None:
        fd = self.fd
        if fd is None or self.error is not None:
            return  # not opened, failed or finished: the loop hears why from the first job
        try:
            for first in range(0, len(pieces), IOV_MAX):
                batch = pieces[first : first + IOV_MAX]
                total = sum(map(len, batch))
                done = os.writev(fd, batch)
                if done < total:  # rare on a file: the rest, plainly
                    rest = memoryview(b"".join(batch))[done:]
                    while rest:
                        rest = rest[os.write(fd, rest) :]
                self.written += total
        except OSError as exc:
            self.error = exc.strerror or type(exc).__name__
            raise

    def finish(self, duration_ms: int) -> int:
        """Patch the duration and size in, sync, close; the size on disk."""
        fd, self.fd = self.fd, None
        if fd is None:
            return self.written
        try:
            if self.error is None:
                flv.patch(fd, duration_ms=duration_ms, size=self.written)
                os.fsync(fd)
        finally:
            os.close(fd)
        return self.written


@dataclass(eq=False)
class _Part:
    """One part as the event loop sees it."""

    number: int
    started_at: datetime
    file: PartFile
    audio_only: bool
    size: int = 0  # bytes given to the file, written or not
    last_ms: int = 0  # the latest tag's time
    row: asyncio.Task[int | None] | None = None
    path: str | None = None


class Recordings:
    """This process's recordings: where they go, their limits, the writer and the rows."""

    def __init__(
        self,
        *,
        folder: Path,
        node: str,
        limits: RecordingLimits,
        sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.folder = folder
        self.node = node
        self.limits = limits
        self.writer = DiskWriter()
        self.writing: set[str] = set()  # paths of parts open now (retention leaves them)
        self._sessions = sessions
        self._background = Background(log)  # the parts' rows
        self._db_errors = LogThrottle(60.0)

    def sink(self, source: RtmpProtocol, channel_name: str) -> RecordingSink:
        grant = source.grant
        if grant is None:
            raise ValueError("a recording needs a publish that was admitted")
        return RecordingSink(self, grant.channel_id, channel_name)

    def spawn(self, coroutine: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        return self._background.spawn(coroutine, what)

    async def insert(self, row: PartRow) -> int | None:
        if self._sessions is None:
            return None
        try:
            async with asyncio.timeout(DB_TIMEOUT), self._sessions() as session:
                return await start_part(session, part=row)
        except Exception as exc:
            self._db_failed("start", exc)
            return None

    async def finish(self, recording_id: int | None, row: PartRow, end: PartEnd) -> None:
        if self._sessions is None:
            return
        try:
            async with asyncio.timeout(DB_TIMEOUT), self._sessions() as session:
                await finish_part(session, recording_id=recording_id, part=row, end=end)
        except Exception as exc:
            self._db_failed("end", exc)

    def _db_failed(self, what: str, exc: Exception) -> None:
        self._db_errors.log(
            log, logging.ERROR, "recording rows not written (the %s of a part): %s",
            what, type(exc).__name__,
        )  # fmt: skip

    async def close(self) -> None:
        """After every recording has closed (the outputs' own close): the rows, the thread."""
        await self._background.settle()
        await asyncio.to_thread(self.writer.close)


def _config(type_id: int, payload: bytes) -> bool:
    """A codec record (a sequence start or end), not a frame: written whenever it changes."""
    if len(payload) < 2:
        return False
    b0, b1 = payload[0], payload[1]
    if type_id == VIDEO:
        if codecs.classify_video(b0, b1) != codecs.COLLECT:
            return False
        return (b0 & 0x0F) in (0, 2, 5) if b0 & 0x80 else True  # not multitrack, metadata
    if codecs.classify_audio(b0, b1) != codecs.COLLECT:
        return False
    return (b0 & 0x0F) in (0, 2, 4) if b0 >> 4 == codecs.EX_AUDIO_FORMAT else True


class RecordingSink:
    """One channel's recording: a `Sink` of outputs.OutputsHub, for as long as the session."""

    def __init__(self, recordings: Recordings, channel_id: int, channel_name: str) -> None:
        self.recordings = recordings
        self.limits = recordings.limits
        self._flush_bytes = min(FLUSH_BYTES, self.limits.behind_bytes // 4)
        self.channel_id = channel_id
        self.channel_name = channel_name
        self.source: RtmpProtocol | None = None
        self.failed: str | None = None  # why it stopped writing, for good
        self.ended = False
        self.dropped = 0  # times it fell behind the disk and skipped to a keyframe
        self.parts = 0  # parts started
        self.sent_bytes = 0  # bytes given to the disk: the node's outgoing load (capacity)
        self._loop = asyncio.get_running_loop()
        self._part: _Part | None = None
        self._timeline = Timeline()
        self._waiting = True  # for a keyframe: nothing is written until one comes
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._in_flight = 0  # given to the writer, not written yet
        self._flush_timer: asyncio.TimerHandle | None = None
        self._configs: dict[bytes, bytes] = {}  # codec records in the part, by kind
        self._session_id: int | None = None
        self._gop_bytes = 0  # since the last keyframe
        self._gop_max = 0  # the largest GOP so far: what the next one may need
        self._endings: set[asyncio.Task[None]] = set()
        self._last_row: asyncio.Task[int | None] | None = None
        self._behind = LogThrottle(10.0)

    # Sink ---------------------------------------------------------------------------------

    def attach(self, source: RtmpProtocol, gap_ms: int | None) -> None:
        self.source = source
        self._session_id = source.session_id or self._session_id
        source.attach_sink(self)
        self._waiting = True  # from the (new) encoder's next keyframe
        if gap_ms is not None and self._part is not None:
            self._timeline.resume(gap_ms)

    def detach(self) -> None:
        self._flush()
        self._note_session()
        self.source = None
        self._waiting = True

    def status(self, now: float) -> dict[str, Any]:
        part = self._part
        if self.failed is not None:
            state = "failed"
        elif self.ended:
            state = "ended"
        elif part is None or self.source is None or self._waiting:
            state = "waiting"
        else:
            state = "recording"
        return {
            "kind": "record",
            "state": state,
            "part": part.number if part is not None else self.parts,
            "bytes": part.size if part is not None else 0,
            "seconds": round(part.last_ms / 1000, 1) if part is not None else 0.0,
            "dropped": self.dropped,
            "reason": self.failed,
        }

    def media(self, type_id: int, timestamp: int, payload: bytes, keyframe: bool) -> None:
        """Every audio and video message of the source: queued, never written here."""
        if self.source is None or self.failed is not None or self.ended:
            return
        part = self._part
        if _config(type_id, payload):
            if part is not None:
                self._record(part, type_id, payload)
            return
        if self._waiting:
            if not (keyframe or (type_id == AUDIO and self._audio_only())):
                return
            if self._pending_bytes + self._in_flight > self.limits.behind_bytes // 2:
                return  # the disk is still catching up: a later keyframe
            self._waiting = False
            self._gop_bytes = 0
            if part is None:
                part = self._open()
            else:  # after a reconnect or a skip: the records this encoder sends
                self._records(part)
        elif part is not None and (keyframe or (part.audio_only and type_id == AUDIO)):
            gop = self._gop_max = max(self._gop_max, self._gop_bytes)
            self._gop_bytes = 0
            if self._timeline.map(timestamp) >= self.limits.max_seconds * 1000:
                part = self._roll(part, "duration limit")
            elif part.size + gop + gop // 4 > self.limits.max_bytes:
                part = self._roll(part, "size limit")
        if self._part is not part or self._waiting or part is None:
            return  # the records alone reached a limit
        self._append(part, type_id, self._timeline.map(timestamp), payload)

    async def close(self) -> None:
        """The session is over for this recording: the part is finished, its row written."""
        if not self.ended:
            self.ended = True
            self._note_session()
            if self._part is not None:
                self._end(self._part, "stream ended")
            self.source = None
        while self._endings:
            await asyncio.gather(*list(self._endings), return_exceptions=True)

    # Inside -------------------------------------------------------------------------------

    def _audio_only(self) -> bool:
        source = self.source
        return (
            source is not None
            and source.video_sequence is None
            and "audiocodecid" in source.metadata
            and "videocodecid" not in source.metadata
        )

    def _note_session(self) -> None:
        if self.source is not None and self.source.session_id is not None:
            self._session_id = self.source.session_id

    def _open(self) -> _Part:
        source = self.source
        assert source is not None
        self._note_session()
        self.parts += 1
        audio_only = self._audio_only()
        part = _Part(self.parts, utcnow(), PartFile(), audio_only)
        self._part = part
        self._timeline.restart()
        self._configs.clear()
        metadata = source.metadata
        audio = source.audio_sequence is not None or "audiocodecid" in metadata or audio_only
        start = flv.file_start(metadata, audio=audio, video=not audio_only)
        recordings = self.recordings
        opened = recordings.writer.run(
            part.file.open,
            recordings.folder,
            self.channel_id,
            self.channel_name,
            part.started_at,
            part.number,
            start,
        )
        part.size = len(start)
        self._in_flight += len(start)
        opened.add_done_callback(partial(self._written, part, len(start)))
        previous = self._last_row  # rows in the order of the parts: ids follow parts
        part.row = self._last_row = recordings.spawn(
            self._start_row(part, opened, previous), "record a part's start"
        )
        self._records(part)
        return part

    def _roll(self, part: _Part, why: str) -> _Part:
        self._end(part, why)
        return self._open()

    def _records(self, part: _Part) -> None:
        """The source's codec records, where the part does not have them yet."""
        source = self.source
        if source is None:
            return
        for type_id, record in ((VIDEO, source.video_sequence), (AUDIO, source.audio_sequence)):
            if record is not None:
                self._record(part, type_id, record)

    def _record(self, part: _Part, type_id: int, payload: bytes) -> None:
        kind = bytes((type_id,)) + payload[:2]
        if self._configs.get(kind) == payload:
            return  # a reconnecting encoder sends the same records again
        if self._append(part, type_id, self._timeline.last, payload):
            self._configs[kind] = payload

    def _append(self, part: _Part, type_id: int, at: int, payload: bytes) -> bool:
        size = TAG_HEADER + len(payload) + 4
        if part.size + size > self.limits.max_bytes:
            self._end(part, "size limit")  # the next part starts at the next keyframe
            self._waiting = True
            return False
        if self._pending_bytes + self._in_flight + size > self.limits.behind_bytes:
            self._skip(part)
            return False
        length = len(payload)
        self._pending += (
            flvfile.tag_head(type_id, at, length),
            payload,
            flvfile.tag_tail(length),
        )
        self._pending_bytes += size
        self.sent_bytes += size
        self._gop_bytes += size
        part.size += size
        part.last_ms = max(part.last_ms, at)
        if self._pending_bytes >= self._flush_bytes:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = self._loop.call_later(FLUSH_EVERY, self._flush)
        return True

    def _skip(self, part: _Part) -> None:
        """The disk fell behind: what waits in memory goes; on from a keyframe once it caught up."""
        part.size -= self._pending_bytes
        self.sent_bytes -= self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        self._configs.clear()  # they may have been among what went
        self._waiting = True
        self.dropped += 1
        self._behind.log(
            log, logging.WARNING,
            "channel=%s recording fell behind the disk: skipping to the next keyframe",
            self.channel_name,
        )  # fmt: skip

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        part = self._part
        if part is None or not self._pending:
            return
        pieces, size = self._pending, self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        self._in_flight += size
        written = self.recordings.writer.run(part.file.write, pieces)
        written.add_done_callback(partial(self._written, part, size))

    def _written(self, part: _Part, size: int, future: asyncio.Future[Any]) -> None:
        self._in_flight -= size
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None or self.failed is not None:
            return
        if self.ended:  # the part is being finished anyway; its row says failed
            self.failed = f"disk error: {part.file.error or type(exc).__name__}"
        else:
            self._fail(part, exc)

    def _fail(self, part: _Part, exc: BaseException) -> None:
        why = f"disk error: {part.file.error or type(exc).__name__}"
        self.failed = why
        log.error(
            "channel=%s recording stopped: %s (%s)",
            self.channel_name,
            why,
            part.file.path or self.recordings.folder,
        )
        self._pending, self._pending_bytes = [], 0
        if self._part is part:
            self._end(part, why, RecordingStatus.FAILED)

    def _end(
        self, part: _Part, why: str, status: RecordingStatus = RecordingStatus.COMPLETE
    ) -> None:
        """Finish the part: the rest of it written, its numbers patched in, its row closed."""
        self._flush()
        self._part = None
        self._configs.clear()
        finished = self.recordings.writer.run(part.file.finish, part.last_ms)
        task = self.recordings.spawn(
            self._finished(part, finished, why, status), "finish a recording's part"
        )
        self._endings.add(task)
        task.add_done_callback(self._endings.discard)

    async def _start_row(
        self,
        part: _Part,
        opened: asyncio.Future[str],
        previous: asyncio.Task[int | None] | None,
    ) -> int | None:
        try:
            part.path = await opened
        except OSError:
            return None  # logged by _fail
        if previous is not None:
            await previous
        self.recordings.writing.add(part.path)
        log.info("channel=%s recording part %d to %s", self.channel_name, part.number, part.path)
        return await self.recordings.insert(self._row(part, part.path))

    async def _finished(
        self, part: _Part, finished: asyncio.Future[int], why: str, status: RecordingStatus
    ) -> None:
        try:
            size = await finished
        except OSError as exc:
            size, status = part.file.written, RecordingStatus.FAILED
            why = f"disk error: {exc.strerror or type(exc).__name__}"
        recording_id = await part.row if part.row is not None else None
        if part.path is None:
            return  # never opened: nothing on disk, no row
        self.recordings.writing.discard(part.path)
        if part.file.error is not None:
            status, why = RecordingStatus.FAILED, f"disk error: {part.file.error}"
        log.info(
            "channel=%s recording part %d ended (%s): %d bytes, %.1f s",
            self.channel_name, part.number, why, size, part.last_ms / 1000,
        )  # fmt: skip
        end = PartEnd(status, utcnow(), size, part.last_ms, why, self._session_id)
        await self.recordings.finish(recording_id, self._row(part, part.path), end)

    def _row(self, part: _Part, path: str) -> PartRow:
        return PartRow(
            channel_id=self.channel_id,
            node=self.recordings.node,
            path=path,
            part=part.number,
            started_at=part.started_at,
            session_id=self._session_id,
        )
