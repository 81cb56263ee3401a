"""RTMP publishers inside one load-generator process: asyncio + uvloop, no per-message work.

The control part of a connection (handshake, connect, createStream, publish) goes
through the product's sans-IO client, `stream_sync.rtmp.client.ClientConnection`, so
the servers see a real publisher. From NetStream.Publish.Start on, media is raw
`transport.write(bytes)` of chunks made at load time (see prechunk.py):

- realtime: one timer per process, every `batch_ms`, writes each publisher's batches
  whose media time is due (its clock starts at its own Publish.Start). What a server
  cannot take stays in the transport's buffer: that is the offered load piling up.
- fast: one publisher writes 256 KiB pieces in a tight loop, with flow control: it
  stops when the transport buffer passes a high-water mark and goes on from
  `resume_writing`, so the generator never buffers more than it can send.
- admission: sequential publishes, each closed right after Publish.Start, to time the
  server's publish admission (key check, lock, session record) cold and warm.

Replies from the server are still fed to the client after Publish.Start (a few
acknowledgements per second), so a refusal or a server-side stop is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, cast

from stream_sync.rtmp.client import (
    ClientConnection,
    Connected,
    ConnectRefused,
    PublishStarted,
    StatusReceived,
)
from stream_sync.rtmp.errors import ProtocolError

from .flvfile import FlvStream
from .prechunk import Replay

HIGH_WATER = 1024 * 1024  # fast mode: transport bytes buffered before writing pauses
LOW_WATER = 256 * 1024
ADMISSION_PAUSE = 0.1  # admission mode: quiet time after each publish (seconds)


class Mode(StrEnum):
    REALTIME = "realtime"
    FAST = "fast"
    ADMISSION = "admission"


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What every publisher of a run does; picklable, sent to each generator process."""

    host: str
    port: int
    app: str = "live"
    mode: Mode = Mode.REALTIME
    duration: float = 30.0  # seconds of media per publisher (fast: seconds of sending)
    spread: float = 2.0  # starts spread evenly over this many seconds (0: all at once)
    # realtime: every publisher stops at go + spread + duration, all at once, so none sits
    # idle (a server would call it stalled) while the last ones finish. False: each sends
    # exactly `duration` seconds of media from its own Publish.Start.
    common_end: bool = True
    chunk_size: int = 4096  # 128: the client never sends Set Chunk Size
    batch_ms: int = 10  # realtime: media time per write (10: about one write per frame)
    settle: float = 0.5  # after the last write, before measuring what is still unsent
    start_timeout: float = 10.0  # TCP connect to Publish.Start, or it counts as failed
    warmup: int = 1  # admission: names published once first, not measured


@dataclass(slots=True)
class PublisherResult:
    index: int  # the publisher's position in the run (never its key)
    attempt: int = 0  # admission mode: 0 = key cache cold, 1 = warm
    started: bool = False  # NetStream.Publish.Start received
    connect_ms: float | None = None  # connect call to TCP established
    start_ms: float | None = None  # connect call to Publish.Start
    admission_ms: float | None = None  # publish command sent to Publish.Start
    bytes_offered: int = 0  # everything handed to the transport: handshake, commands, media
    unsent_at_end: int = 0  # of that, still in the transport buffer + kernel send queue
    max_buffered: int = 0  # largest transport buffer seen (realtime: how far behind)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ProcessStats:
    """The generator process's own health over the measured window."""

    cpu_s: float = 0.0
    max_tick_lag_ms: float = 0.0  # realtime: the timer's worst lateness
    extra: dict[str, float] = field(default_factory=dict)


def unsent_kernel_bytes(sock: socket.socket | None) -> int:
    """Bytes in the socket's send queue the peer has not taken yet (SIOCOUTQ)."""
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


class Publisher(asyncio.Protocol):
    def __init__(self, run: ProcessRun, index: int, name: str, attempt: int = 0) -> None:
        self.run = run
        self.name = name
        self.result = PublisherResult(index, attempt)
        self.loop = run.loop
        self.connect_at = time.perf_counter()  # uvloop's clock has 1 ms steps
        self.transport: asyncio.Transport | None = None
        self.client: ClientConnection | None = None
        self.published_at = 0.0
        self.limit_ms = run.config.duration * 1000  # media time at which sending stops
        self.publish_sent_at = 0.0
        self.replay: Replay | None = None
        self.pass_no = 0  # realtime/fast: which pass through the file
        self.next_batch = 0
        self.pieces: list[bytes] = []
        self.paused = False
        self.sending = False
        self.finished = asyncio.Event()  # Publish.Start, a failure, or the end of sending
        self.lost = asyncio.Event()
        self._closing = False
        self._timeout = self.loop.call_later(run.config.start_timeout, self._start_timed_out)

    # asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's does not subclass asyncio.Transport, so no isinstance).
        self.transport = tcp = cast(asyncio.Transport, transport)
        now = self.loop.time()
        self.result.connect_ms = (time.perf_counter() - self.connect_at) * 1000
        cfg = self.run.config
        if cfg.mode is Mode.FAST:
            tcp.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self.client = ClientConnection(
            app=cfg.app,
            tc_url=f"rtmp://{cfg.host}:{cfg.port}/{cfg.app}",
            now=now,
            chunk_size=cfg.chunk_size,
        )
        self._flush_client()

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            return
        try:
            events = client.receive_data(data)
        except ProtocolError as exc:
            self.fail(f"protocol error from server: {exc}")
            return
        for event in events:
            if isinstance(event, Connected):
                client.publish(self.name)
            elif isinstance(event, PublishStarted):
                self._started()
            elif isinstance(event, ConnectRefused):
                self.fail(f"connect refused: {event.info.get('description', event.info)}")
            elif isinstance(event, StatusReceived) and event.level == "error":
                what = "stopped by server" if self.result.started else "publish refused"
                self.fail(f"{what}: {event.code} {event.info.get('description', '')}".strip())
        if not self.publish_sent_at and client.stream_id:
            self.publish_sent_at = time.perf_counter()  # createStream answered: publish queued now
        self._flush_client()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.sending and self.run.config.mode is Mode.FAST:
            self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closing and self.result.error is None:
            when = "while publishing" if self.result.started else "before Publish.Start"
            self.result.error = f"connection lost {when}: {exc or 'closed by server'}"
        self._stop_sending()
        self._timeout.cancel()
        self.transport = None
        self.finished.set()
        self.lost.set()

    # Publishing -----------------------------------------------------------------------

    def _flush_client(self) -> None:
        if self.client is None or self.transport is None:
            return
        data = self.client.data_to_send()
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        self.result.bytes_offered += len(data)

    def _started(self) -> None:
        now = self.loop.time()
        clock = time.perf_counter()
        self._timeout.cancel()
        result = self.result
        result.started = True
        result.start_ms = (clock - self.connect_at) * 1000
        if self.publish_sent_at:
            result.admission_ms = (clock - self.publish_sent_at) * 1000
        assert self.client is not None
        self.replay = self.run.replay(self.client.stream_id)
        self.published_at = now
        if self.run.end_at is not None:
            self.limit_ms = (self.run.end_at - now) * 1000
        mode = self.run.config.mode
        if mode is Mode.ADMISSION:
            self.finished.set()
            return
        self._write(self.replay.preamble)
        self.sending = True
        if mode is Mode.FAST:
            self.pieces = self.replay.pieces(0)
            # If the server stops draining us, the end must still come on time.
            self.loop.call_at(now + self.run.config.duration + 0.001, self._check_end)
            self._pump()
        else:
            self.run.pacing.add(self)
            self.advance(now)

    def advance(self, now: float) -> None:
        """Realtime: write every batch whose media time has come (called by the pacer)."""
        replay = self.replay
        if replay is None or self.transport is None:
            return
        media_ms = (now - self.published_at) * 1000
        limit_ms = self.limit_ms
        batches = replay.batches
        count = len(batches)
        while True:
            due = self.pass_no * replay.duration_ms + batches[self.next_batch][0]
            if due >= limit_ms:
                if self.next_batch == 0 and self.pass_no:  # the end of a pass: end it properly
                    self._write(replay.trailer(self.pass_no - 1))
                self._done_sending()
                return
            if due > media_ms:
                break
            self._write(replay.batch(self.pass_no, self.next_batch))
            self.next_batch += 1
            if self.next_batch == count:
                self.next_batch = 0
                self.pass_no += 1
        buffered = self.transport.get_write_buffer_size()
        self.result.max_buffered = max(self.result.max_buffered, buffered)

    def _pump(self) -> None:
        """Fast mode: write pieces until the transport pushes back or time is up."""
        replay, transport = self.replay, self.transport
        if replay is None or transport is None:
            return
        end = self.published_at + self.run.config.duration
        loop_time = self.loop.time
        while not self.paused and self.sending:
            if loop_time() >= end:
                self._done_sending()
                return
            if self.next_batch == len(self.pieces):
                self.pass_no += 1
                self.pieces = replay.pieces(self.pass_no)
                self.next_batch = 0
            self._write(self.pieces[self.next_batch])
            self.next_batch += 1

    def _check_end(self) -> None:
        if self.sending and self.loop.time() >= self.published_at + self.run.config.duration:
            self._done_sending()

    def _done_sending(self) -> None:
        if self.sending:
            self._stop_sending()
            self.finished.set()

    def _stop_sending(self) -> None:
        self.sending = False
        self.run.pacing.discard(self)

    def measure_unsent(self) -> None:
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        self.result.unsent_at_end = transport.get_write_buffer_size() + unsent_kernel_bytes(sock)

    # Ending ---------------------------------------------------------------------------

    def _start_timed_out(self) -> None:
        if not self.result.started:
            self.fail(f"no Publish.Start within {self.run.config.start_timeout:g} s")

    def fail(self, reason: str) -> None:
        if self.result.error is None:
            self.result.error = reason
        self._stop_sending()
        self.finished.set()
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """A clean end: FCUnpublish, deleteStream, then FIN, and the server closes too.

        Half-closing (rather than closing) lets the server's last replies be read: a
        socket closed with unread data answers with a reset, which the server would log
        as a connection error.
        """
        self._closing = True
        self._stop_sending()
        self._timeout.cancel()
        transport, client = self.transport, self.client
        if transport is None or transport.is_closing():
            return
        if client is not None and self.result.started:
            with contextlib.suppress(ProtocolError):
                client.unpublish()
            self._flush_client()
        if transport.can_write_eof():
            transport.write_eof()  # the server's EOF then ends the connection
        else:
            transport.close()

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()


def wrong_secret(key: str) -> str:
    """The same key id with a different last character: a refused key, cached anyway."""
    return key[:-1] + ("B" if key.endswith("A") else "A")


class Pacing:
    """One timer for all realtime publishers of the process, every batch_ms."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.active: set[Publisher] = set()
        self.max_lag = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def add(self, publisher: Publisher) -> None:
        self.active.add(publisher)
        if self._handle is None:
            self._due = self.loop.time() + self.interval
            self._handle = self.loop.call_at(self._due, self._tick)

    def discard(self, publisher: Publisher) -> None:
        self.active.discard(publisher)

    def _tick(self) -> None:
        now = self.loop.time()
        self.max_lag = max(self.max_lag, now - self._due)
        for publisher in list(self.active):
            publisher.advance(now)
        if not self.active:
            self._handle = None
            return
        self._due = max(self._due + self.interval, now)
        self._handle = self.loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class ProcessRun:
    """The publishers of one generator process, from the first connect to the last close."""

    def __init__(self, config: LoadConfig, stream: FlvStream) -> None:
        self.config = config
        self.stream = stream
        self.loop = asyncio.get_running_loop()
        self.pacing = Pacing(self.loop, config.batch_ms / 1000)
        self.publishers: list[Publisher] = []
        self.end_at: float | None = None  # realtime with common_end: when everyone stops
        self._replays: dict[int, Replay] = {}

    def replay(self, msid: int) -> Replay:
        """The pre-chunked stream for this message stream id (servers answer 1)."""
        replay = self._replays.get(msid)
        if replay is None:
            replay = Replay(
                self.stream,
                chunk_size=self.config.chunk_size,
                msid=msid,
                batch_ms=self.config.batch_ms,
            )
            self._replays[msid] = replay
        return replay

    async def connect(self, index: int, name: str, attempt: int = 0) -> Publisher:
        publisher = Publisher(self, index, name, attempt)
        self.publishers.append(publisher)
        cfg = self.config
        try:
            await self.loop.create_connection(lambda: publisher, cfg.host, cfg.port)
        except OSError as exc:
            publisher.fail(f"TCP connect failed: {exc}")
            publisher.lost.set()
        return publisher

    async def publish_all(
        self, assignments: list[tuple[int, str]], total: int, go_at: float
    ) -> None:
        """Connect everyone on schedule (go_at is this loop's clock), until all finish."""
        cfg = self.config
        if cfg.common_end and cfg.mode is Mode.REALTIME:
            self.end_at = go_at + cfg.spread + cfg.duration
        step = cfg.spread / total if total > 1 else 0.0
        tasks = []
        for index, name in assignments:
            delay = max(0.0, go_at + index * step - self.loop.time())
            tasks.append(self.loop.create_task(self._delayed(delay, index, name)))
        publishers = await asyncio.gather(*tasks)
        await asyncio.gather(*(p.finished.wait() for p in publishers))
        self.pacing.stop()

    async def _delayed(self, delay: float, index: int, name: str) -> Publisher:
        if delay > 0:
            await asyncio.sleep(delay)
        return await self.connect(index, name)

    async def admissions(self, assignments: list[tuple[int, str]]) -> None:
        """One publish at a time, cold and warm keys alternating, after a warm-up publish.

        The names after the warm-up ones pair up: (cold, warm). First every warm key's
        record is cached by a publish with the right key id but a wrong secret (refused
        as an unknown key; the record is cached all the same). Then the pairs publish,
        the order inside a pair alternating, with a pause after each publish: the end of
        a publish leaves work behind (session record, status events) that would
        otherwise slow down whichever publish comes next. So both keys of a pair publish
        for the first time, on channels in the same state, and differ only in where the
        key check finds the key. The last warm key is checked well within the cache's
        30 s freshness (50 pairs take about 15 s).
        """
        warm_up, rest = assignments[: self.config.warmup], assignments[self.config.warmup :]
        pairs = list(zip(rest[::2], rest[1::2], strict=False))
        for index, name in warm_up:
            await self._one_admission(index, name, -1)
        for _, (warm_index, warm_name) in pairs:
            await self._one_admission(warm_index, wrong_secret(warm_name), -2)
        await asyncio.sleep(ADMISSION_PAUSE * 5)
        for number, (cold, warm) in enumerate(pairs):
            order = [(*cold, 0), (*warm, 1)] if number % 2 == 0 else [(*warm, 1), (*cold, 0)]
            for index, name, attempt in order:
                await self._one_admission(index, name, attempt)
                await asyncio.sleep(ADMISSION_PAUSE)
        self.publishers = [p for p in self.publishers if p.result.attempt >= 0]

    async def _one_admission(self, index: int, name: str, attempt: int) -> None:
        publisher = await self.connect(index, name, attempt)
        await publisher.finished.wait()
        publisher.close()
        await self.wait_lost([publisher], 5.0)

    def measure_unsent(self) -> None:
        for publisher in self.publishers:
            publisher.measure_unsent()

    async def close_all(self, limit: float = 5.0) -> None:
        for publisher in self.publishers:
            publisher.close()
        await self.wait_lost(self.publishers, limit)

    @staticmethod
    async def wait_lost(publishers: list[Publisher], limit: float) -> None:
        waits = [p.lost.wait() for p in publishers if p.transport is not None]
        if not waits:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*waits), limit)
        except TimeoutError:
            for publisher in publishers:
                publisher.abort()  # the server never read the rest: don't wait forever
            await asyncio.sleep(0.1)

    def results(self) -> list[PublisherResult]:
        return [p.result for p in self.publishers]
