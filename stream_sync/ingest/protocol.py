"""One RTMP connection: moves bytes between a socket and the sans-IO core.

asyncio's BufferedProtocol lets the event loop read straight into the core's
per-connection buffer, so a media byte is never copied on the way in. Everything
that can go wrong with the peer ends this connection with one log line; nothing
here can raise into the event loop or touch another connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from ..monitor.lifecycle import Summary
from ..monitor.meter import StreamMeter
from ..monitor.status import EndKind
from ..rtmp.codecs import CodecError, describe_audio, describe_video
from ..rtmp.config import CapsEx
from ..rtmp.connection import ServerConnection
from ..rtmp.errors import ProtocolError
from ..rtmp.events import (
    CodecConfigured,
    ConnectRequested,
    Event,
    KeyframeCaptured,
    MediaReceived,
    MetadataReceived,
    PublishRequested,
    PublishStopped,
)
from ..rtmp.flv import PacketKind
from ..state.interfaces import (
    PublishEnded,
    PublishRefused,
    PublishStarted,
    StatusChanged,
    StopRequested,
)
from .admission import PublishGrant, PublishRefusal
from .guard import FAILURES
from .playback import Broadcast

if TYPE_CHECKING:
    from .outputs import Sink
    from .server import IngestServer

log = logging.getLogger("stream_sync.ingest")
_ids = itertools.count(1)
LINGER_SECONDS = 2.0  # after a refusal, how long we wait for the peer to read it and go
# How long the start of a publish waits for its first media, to record both at once.
# Encoders send media within milliseconds of Publish.Start.
FIRST_MEDIA_WAIT = 0.5
# How long the start of a publish lets admissions go first (IngestServer.after_admissions).
ADMISSIONS_FIRST = 2.0


class RtmpProtocol(asyncio.BufferedProtocol):
    def __init__(self, server: IngestServer, *, tls: bool = False) -> None:
        self.server = server
        self.tls = tls  # inside TLS: its bytes come only through the transport
        self.id = f"c{next(_ids)}"
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self._clock = server.loop.time
        self.opened_at = self._clock()  # the factory runs when the TCP accept happens
        self.conn = ServerConnection(
            server.config, now=self.opened_at, epoch_ms=int(time.time() * 1000)
        )
        self.grant: PublishGrant | None = None
        self.session_id: int | None = None
        self.can_reconnect = False  # the client announced Enhanced RTMP reconnect support
        self.moving = False  # asked to reconnect to another node (drain, shutdown)
        self.renewed_messages = -1  # media messages seen at the last lease renewal
        self.read_mark = 1  # SO_RCVLOWAT now (ingest/batching.py)
        self.marked_bytes = 0  # media bytes when the mark was last tuned
        # The monitor's view of this publish (see IngestServer's upkeep).
        self.meter: StreamMeter | None = None
        self.test = False
        self.grace = 30.0
        self.media_live = False  # the status machine was told media flows
        self.media_seen = 0  # media messages at the last media check
        self.awaiting_media = False  # accepted, no media yet: checked on every read
        self.media_at = 0.0  # wall-clock time media last advanced
        self.health: dict[str, Any] = {}
        self.health_seen: set[str] = set()
        self.publish_started_at: float | None = None
        self.metadata: dict[str, Any] = {}
        self.codecs: dict[str, str] = {}
        # Its picture (thumbnails.py): track 0's video codec and configuration record,
        # when a keyframe was last taken for one, and the time of the stored picture.
        self.video_codec: str | None = None
        self.video_config: bytes | None = None
        self.thumbnail_tried = 0.0
        self.thumbnail_at: float | None = None
        # Playback (playback.py): its viewers, and the latest sequence starts and
        # metadata a viewer gets first, as FLV tag bodies.
        self.broadcast: Broadcast | None = None
        self.video_sequence: bytes | None = None
        self.audio_sequence: bytes | None = None
        self.close_reason: str | None = None
        self.linger_until: float | None = None
        self._reading_paused = False
        self._admission: asyncio.Task[None] | None = None
        self._journal: asyncio.Task[None] | None = None  # this publish's last database write
        self.start_unrecorded = False  # accepted; its start not yet sent to the database
        self.first_media = asyncio.Event()

    # asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's does not subclass asyncio.Transport, so no isinstance).
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        server = self.server
        if server.guard.connection_opened(self.address, len(server.connections)) is not None:
            self.transport = None  # never opened: connection_lost has nothing to undo
            cast(asyncio.Transport, transport).abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.opened(self)
        log.info("conn=%s peer=%s opened", self.id, self.peer)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        # The hot path: one call into the core per read; the rest only when it matters.
        conn = self.conn
        try:
            events = conn.buffer_updated(nbytes, self._clock())
        except ProtocolError as exc:
            self.abort(f"protocol error: {exc}")
            return
        if (events or conn.has_output) and not self._act(events):
            return
        if self.awaiting_media:  # Live the moment media arrives, not at the next sweep
            counters = conn.counters
            seen = counters.video_messages + counters.audio_messages
            if seen:
                self.awaiting_media = False
                self.server.media_arrived(self, seen, time.time())
        if conn.awaiting_decision and not self._reading_paused and not conn.get_buffer():
            self._pause_reading()  # full while the application decides

    def read_from(self, fd: int) -> int:
        """Read what the kernel holds for this connection (polling.py): the bytes read,
        or -1 once the connection ends.

        The same path as the event loop's reads: into the core's buffer, then
        buffer_updated. A full buffer (a decision pending) waits for the next round.
        """
        conn, transport = self.conn, self.transport
        if transport is None or transport.is_closing():
            return -1  # its descriptor may be closed, even reused: never read it again
        total = 0
        while True:
            space = conn.get_buffer()
            if not space:
                return total
            try:
                n = os.readv(fd, (space,))
            except BlockingIOError:
                return total
            except OSError as exc:
                self.abort(f"connection error: {exc!r}")
                return -1
            if n == 0:
                self.eof_received()
                transport.close()
                return -1
            total += n
            self.buffer_updated(n)
            if transport.is_closing():
                return -1
            if n < len(space) or self not in self.server.poller:  # drained, or given back
                return total

    def read_by_loop(self) -> None:
        """The event loop reads this connection again (the poller handed it back)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.conn.awaiting_decision and not self.conn.get_buffer():
            self._reading_paused = True  # resumed with the decision
        else:
            transport.resume_reading()

    def _pause_reading(self) -> None:
        if self.transport is not None and self not in self.server.poller:  # it waits there
            self.transport.pause_reading()
            self._reading_paused = True

    def eof_received(self) -> bool:
        if self.close_reason is None:
            self.close_reason = "peer closed"
        return False  # let asyncio close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return  # refused by the guard at accept
        self.server.guard.connection_closed(self.address)
        if self._admission is not None:
            self._admission.cancel()
        reason = self.close_reason or (f"connection error: {exc}" if exc else "peer closed")
        self._end_publish(reason)
        conn = self.conn
        duration = self.server.loop.time() - self.opened_at
        extra = ""
        if self.publish_started_at is not None:
            c = conn.counters
            extra = (
                f" media_bytes={c.media_bytes} video_frames={c.video_frames}"
                f" audio_frames={c.audio_frames} keyframes={c.keyframes}"
            )
        log.info(
            "conn=%s peer=%s closed reason=%r duration=%.2fs bytes_in=%d%s",
            self.id,
            self.peer,
            reason,
            duration,
            conn.bytes_received,
            extra,
        )
        self.server.closed(self)

    # Events from the core ------------------------------------------------------------

    def _drive(self, step: Callable[..., list[Event]], *args: Any) -> bool:
        """Run one step of the core, act on its events, send what it queued.

        False when the peer broke the protocol and the connection is being dropped.
        """
        try:
            events = step(*args)
        except ProtocolError as exc:
            self.abort(f"protocol error: {exc}")
            return False
        return self._act(events)

    def _act(self, events: list[Event]) -> bool:
        """Act on the core's events, then send what it queued; False if the peer broke it."""
        try:
            if events:
                self._handle(events)
        except ProtocolError as exc:
            self.abort(f"protocol error: {exc}")
            return False
        self.flush()
        return True

    def _handle(self, events: list[Event]) -> None:
        conn = self.conn
        for event in events:
            if isinstance(event, MediaReceived):  # by far the most frequent, when collected
                if self.broadcast is not None:
                    self.broadcast.media(event.message_type, event.timestamp, event.payload)
            elif isinstance(event, ConnectRequested):
                self.can_reconnect = bool(event.caps_ex & CapsEx.RECONNECT)
                refusal = self.server.admission.check_connect(event)
                if refusal is None:
                    self._handle(conn.accept_connect())
                else:
                    conn.reject_connect(refusal)
                    log.info(
                        "conn=%s peer=%s connect refused reason=%r", self.id, self.peer, refusal
                    )
                    self._finish("connect refused")
            elif isinstance(event, PublishRequested):
                self._admission = self.server.loop.create_task(self._admit(event))
            elif isinstance(event, PublishStopped):
                self._end_publish(f"client stopped ({event.reason})")
            elif isinstance(event, MetadataReceived):
                self.metadata = event.metadata
                if self.meter is not None:
                    self.meter.metadata(event.metadata)
            elif isinstance(event, CodecConfigured):
                self._codec_configured(event)
            elif isinstance(event, KeyframeCaptured) and self.server.thumbnails is not None:
                self.server.thumbnails.captured(self, event)

    def _codec_configured(self, event: CodecConfigured) -> None:
        packet = event.packet
        # A multitrack stream's other tracks are "video.1" and so on: track 0 is the
        # stream's own codec, whatever order the tracks were configured in.
        self.codecs[f"{event.media}.{packet.track}" if packet.track else event.media] = packet.codec
        if packet.kind is not PacketKind.SEQUENCE_START or packet.track:
            return
        if event.media == "video":
            self.video_codec, self.video_config = packet.codec, packet.body
            self.video_sequence = bytes(event.payload)
        else:
            self.audio_sequence = bytes(event.payload)
        if self.meter is None:
            return
        try:
            if event.media == "video":
                self.meter.video_config(describe_video(packet.codec, packet.body))
            else:
                self.meter.audio_config(describe_audio(packet.codec, packet.body))
        except CodecError:
            pass  # e.g. libaom's empty first AV1 record; a later one describes the stream

    async def _admit(self, event: PublishRequested) -> None:
        try:
            decision = await self._decide(event)
        finally:
            self._admission = None
        server = self.server
        if self.transport is None or self.transport.is_closing():
            if isinstance(decision, PublishGrant):
                await server.admission.release(decision)
            return
        if isinstance(decision, PublishRefusal):
            self._refuse(event, decision)
        else:
            self._accept(event, decision)

    async def _decide(self, event: PublishRequested) -> PublishGrant | PublishRefusal:
        """Admission's answer, unless the guard refuses first; a failure's refusal waits."""
        server, guard = self.server, self.server.guard
        blocked = guard.blocked_for(self.address)
        if blocked:  # no key check, no database: the address used up its attempts
            guard.refuse("address_blocked", "publish from %s refused", self.address)
            await asyncio.sleep(guard.limits.max_refusal_delay)
            return PublishRefusal(
                "address_blocked",
                f"Too many failed attempts from this address; try again in {math.ceil(blocked)} s.",
            )
        try:
            with server.admitting():
                decision = await asyncio.wait_for(
                    server.admission.admit_publish(
                        event.name, owner=f"{server.node_name}/{self.id}"
                    ),
                    server.admission_timeout,
                )
        except TimeoutError:
            log.warning("conn=%s admission timed out after %gs", self.id, server.admission_timeout)
            return PublishRefusal("unavailable", "Server busy; try again shortly.")
        except Exception:
            log.exception("conn=%s admission failed", self.id)
            return PublishRefusal("unavailable", "Server error; try again shortly.")
        if isinstance(decision, PublishRefusal) and decision.reason in FAILURES:
            delay = guard.failed(self.address, decision.key_id)
            if delay:  # a retrying encoder with a revoked key slows down, not storms
                await asyncio.sleep(delay)
        return decision

    def _refuse(self, event: PublishRequested, decision: PublishRefusal) -> None:
        conn, server = self.conn, self.server
        redirect = decision.redirect if self.can_reconnect else None
        if redirect:
            conn.request_reconnect(redirect, decision.description)
        conn.reject_publish(event.stream_id, decision.description, decision.code)
        if decision.reason != "address_blocked":  # those the guard logs, rate-limited
            log.info(
                "conn=%s peer=%s publish refused reason=%s key_id=%s%s",
                self.id,
                self.peer,
                decision.reason,
                decision.key_id or "-",
                " (reconnect requested)" if redirect else "",
            )
            refused = PublishRefused(
                decision.channel_id,
                decision.key_id,
                decision.reason,
                self.address,
                server.node_name,
            )
            server.spawn(server.publish_event(refused), "announce a refused publish")
        if server.recorder is not None:  # aggregated: one audit row per minute and address
            server.recorder.refused(
                key_id=decision.key_id,
                channel_id=decision.channel_id,
                address=self.address,
                reason=decision.reason,
            )
        self._finish(f"publish refused ({decision.reason})")

    def _accept(self, event: PublishRequested, decision: PublishGrant) -> None:
        conn, server = self.conn, self.server
        self.grant = decision
        self.publish_started_at = server.loop.time()
        self.test = is_test_publish(event.name)
        self.meter = StreamMeter(started_at=time.time())
        self.media_at = time.time()
        server.publishers[self.id] = self
        log.info(
            "conn=%s peer=%s publish accepted channel=%s key_id=%s token=%d",
            self.id,
            self.peer,
            decision.channel_name,
            decision.key_id,
            decision.lease.token,
        )
        if decision.took_over is not None:  # cut the silent holder, wherever it is
            server.spawn(
                server.bus.publish(
                    StopRequested(decision.channel_id, "taken over", decision.lease.token)
                ),
                "ask the silent holder to stop",
            )
        self.awaiting_media = True
        self.start_unrecorded = True
        self.journal(self._record_start(decision))
        if server.outputs is not None:
            server.outputs.started(self, decision.channel_id, decision.channel_name)
        if not self._drive(conn.accept_publish, event.stream_id):
            return
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def attach_sink(self, sink: Sink) -> None:
        """A push or the recording (outputs.py) hears every media message from now on."""
        if self.broadcast is None:
            self.broadcast = Broadcast(self, self.server.playback.limits)
            self.conn.collect_media = True
        if sink not in self.broadcast.sinks:
            self.broadcast.sinks.append(sink)

    def detach_sink(self, sink: Sink) -> None:
        """It hears no more; with nothing else listening, media delivery goes off."""
        broadcast = self.broadcast
        if broadcast is None or sink not in broadcast.sinks:
            return
        broadcast.sinks.remove(sink)
        if not broadcast.sinks and not broadcast.readers:
            self.broadcast = None
            self.conn.collect_media = False

    def journal(self, step: Coroutine[Any, Any, None]) -> None:
        """Record a change of this publish after every change recorded before it.

        Nothing about a publish waits for the database: the encoder hears
        Publish.Start once the lock is held. The writes then run in the order the
        changes happened, so an end never overtakes its start.
        """
        self._journal = self.server.spawn(_after(self._journal, step), "record a publish step")

    async def _record_start(self, grant: PublishGrant) -> None:
        """The session row, at the first media if it comes soon: one transaction for both."""
        server = self.server
        if server.recorder is not None and self.grant is grant and not self.media_live:
            timer = server.loop.call_later(FIRST_MEDIA_WAIT, self.first_media.set)
            await self.first_media.wait()
            timer.cancel()
            await server.after_admissions(ADMISSIONS_FIRST)
        self.start_unrecorded = False
        media = self.media_live  # set by the first media (server.media_arrived)
        started = PublishStarted(grant.channel_id, grant.key_id, self.id, None, server.node_name)
        status: list[StatusChanged] = []
        if server.recorder is not None:
            started, status, self.grace = await server.recorder.started(
                started,
                remote_address=self.address,
                fencing_token=grant.lease.token,
                test=self.test,
                media=media,
            )
        self.session_id = started.session_id
        await server.publish_event(started)
        await server.announce(status, grant.channel_name)

    @property
    def address(self) -> str:
        """The peer's IP address, without the port."""
        return self.peer.rsplit(":", 1)[0].strip("[]")

    # Ending --------------------------------------------------------------------------

    def stop_publish(self, description: str, reason: str) -> None:
        """End a live publish from our side (key reset, kick, shutdown)."""
        if self.transport is None or self.transport.is_closing():
            return
        self.conn.end_publish(description)
        self._finish(reason)

    def abort(self, reason: str) -> None:
        self.close_reason = reason
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, reason: str) -> None:
        """Send what is queued, then half-close and give the peer a moment to read it.

        Closing at once could make the kernel answer the peer's next bytes with a
        reset that destroys our refusal before the encoder reads it.
        """
        self.close_reason = reason
        self.flush()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            self.linger_until = self.server.loop.time() + LINGER_SECONDS
        else:
            transport.close()

    def flush(self) -> None:
        conn, transport = self.conn, self.transport
        if transport is None:
            return
        data = conn.data_to_send()
        if data and not transport.is_closing():
            transport.write(data)

    def _end_publish(self, reason: str) -> None:
        grant, self.grant = self.grant, None
        if grant is None:
            return
        if self.moving and reason.startswith("client stopped"):
            reason = "moved to another node"  # not a stop: it is on its way back
        server = self.server
        server.publishers.pop(self.id, None)
        server.poller.give_back(self)
        if self.broadcast is not None:
            self.broadcast.end("the stream ended")
        if server.outputs is not None:
            server.outputs.ended(self, grant.channel_id, end_kind(reason), self.grace)
        log.info(
            "conn=%s publish ended channel=%s key_id=%s reason=%r",
            self.id,
            grant.channel_name,
            grant.key_id,
            reason,
        )
        server.spawn(server.admission.release(grant), "release a lease")
        self.first_media.set()  # a start still waiting for media is recorded now
        self.journal(self._record_end(grant, reason))

    async def _record_end(self, grant: PublishGrant, reason: str) -> None:
        """The session row first, then the bus: a consumer that misses the event can read it."""
        server, counters, session_id = self.server, self.conn.counters, self.session_id
        ended = PublishEnded(
            grant.channel_id,
            grant.key_id,
            self.id,
            session_id,
            reason,
            counters.media_bytes,
            counters.video_frames,
            counters.audio_frames,
            self.codecs.get("video"),
            self.codecs.get("audio"),
            server.node_name,
        )
        status: list[StatusChanged] = []
        if server.recorder is not None:
            ended, status = await server.recorder.ended(
                ended, kind=end_kind(reason), grace=self.grace, summary=self.summary()
            )
        await server.publish_event(ended)
        await server.announce(status, grant.channel_name)

    def summary(self, *, running: bool = False) -> Summary:
        """This publish, as the session history keeps it (``running``: still publishing)."""
        meter = self.meter
        if meter is None:
            return Summary()
        snapshot = meter.snapshot(time.time())
        video = snapshot.video
        return Summary(
            encoder=snapshot.metadata.encoder if snapshot.metadata else None,
            width=video.width if video else None,
            height=video.height if video else None,
            fps=round(snapshot.fps, 2) if snapshot.fps else None,
            peak_kbps=snapshot.peak_total_kbps_5s,
            health_issues=tuple(sorted(self.health_seen)),
            running_bytes=self.conn.counters.media_bytes if running else 0,
        )


def is_test_publish(name: str) -> bool:
    """A `?test` after the key: measure everything, announce nothing (status "testing")."""
    _, _, query = name.partition("?")
    return "test" in {part.split("=", 1)[0].strip().lower() for part in query.split("&")}


def end_kind(reason: str) -> EndKind:
    """How a publish ended, in the status machine's terms, from why this node ended it."""
    if reason.startswith("client stopped"):
        return EndKind.CLEAN
    if reason == "key revoked":
        return EndKind.REVOKED
    if reason == "kicked":
        return EndKind.KICKED
    if reason in ("taken over", "lease lost"):
        return EndKind.TAKEN_OVER
    return EndKind.ABRUPT


async def _after(before: asyncio.Task[None] | None, step: Coroutine[Any, Any, None]) -> None:
    if before is not None:
        await asyncio.wait((before,))  # its outcome is its own: spawn() logs a failure
    await step
