"""The RTMP listener: accepts connections, keeps leases alive, stops publishers on demand.

Timeouts are checked by one sweep over all connections instead of a timer per
connection: at thousands of connections that is far less churn, and the core tells
each connection's deadline. The same sweep renews the channel lease of every
publisher whose media is still flowing (a silent one stops renewing, so another node
may take its channel over), and now and then rechecks live publishers' keys, which
covers a revocation event lost while Redis was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..background import Background
from ..monitor.health import HealthThresholds, assess
from ..rtmp.config import RtmpConfig
from ..rtmp.errors import (
    HandshakeTimeoutError,
    IdleTimeoutError,
    ProtocolError,
    PublishTimeoutError,
)
from ..state.errors import StateUnavailable
from ..state.interfaces import (
    BusEvent,
    DrainRequested,
    EventBus,
    KeyRevoked,
    KeyState,
    OutputsChanged,
    PublishLocks,
    PublishStarted,
    StatusChanged,
    StopRequested,
    StreamStats,
    ThumbnailsWanted,
)
from . import batching, polling
from .admission import Admission, NodeView
from .guard import Guard
from .keycheck import KeyChecker
from .listener import Listener, bind
from .outputs import OutputsHub
from .playback import PlaybackHub
from .protocol import RtmpProtocol
from .recorder import Recorder
from .thumbnails import Thumbnailer

log = logging.getLogger("stream_sync.ingest")
SWEEP_INTERVAL = 0.5
_TIMEOUTS = {
    HandshakeTimeoutError: "handshake_timeout",
    PublishTimeoutError: "publish_timeout",
    IdleTimeoutError: "idle_timeout",
}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Upkeep:
    """How often the ingest node does its background duties (seconds), and its limits."""

    renew_every: float = 1.0
    recheck_keys_every: float = 30.0
    stats_every: float = 1.0
    summary_every: float = 10.0
    stall_after: float = 3.0  # no media for this long: the status machine hears "stalled"
    read_batch: float = 0.1  # seconds of a stream the kernel collects per read; 0: off
    health: HealthThresholds = field(default_factory=HealthThresholds)


class IngestServer:
    def __init__(
        self,
        *,
        config: RtmpConfig,
        admission: Admission,
        bus: EventBus,
        node_name: str = "node",
        server_name: str | None = None,
        locks: PublishLocks | None = None,
        checker: KeyChecker | None = None,
        recorder: Recorder | None = None,
        peers: NodeView | None = None,
        admission_timeout: float = 5.0,
        upkeep: Upkeep = Upkeep(),
        guard: Guard | None = None,
        thumbnails: Thumbnailer | None = None,
        outputs: OutputsHub | None = None,
    ) -> None:
        self.config = config
        self.admission = admission
        self.bus = bus
        self.node_name = node_name
        self.server_name = server_name or node_name  # what `ingest drain` names
        self.locks = locks
        self.checker = checker
        self.recorder = recorder
        self.peers = peers  # where drained publishers are sent
        self.admission_timeout = admission_timeout
        self.upkeep = upkeep
        self.guard = guard or Guard()
        self.thumbnails = thumbnails
        self.playback = PlaybackHub(self)
        self.outputs = outputs  # pushes to other servers, the recording (outputs.py)
        self.connections: set[RtmpProtocol] = set()
        self.publishers: dict[str, RtmpProtocol] = {}
        self.draining = False
        self.drain_deadline: float | None = None
        self.drain_target: str | None = None  # where capable publishers are asked to go
        self.loop = asyncio.get_running_loop()
        self.port = 0
        self.tls_port = 0
        self._server: Listener | None = None
        self._tls_server: Listener | None = None
        self._background = Background(log)  # short jobs: lease releases, bus events
        self._daemons = Background(log)  # loops run until shutdown, which cancels them
        self._idle = asyncio.Event()  # set whenever no connection is open
        self._idle.set()
        self._left = asyncio.Event()  # set whenever a connection closes
        self._admitting = 0
        self._not_admitting = asyncio.Event()  # set whenever no admission is under way
        self._not_admitting.set()
        self.poller = polling.ReadPoller(self.loop, upkeep.read_batch)

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen; with reuse_port, beside the other workers of this server (SO_REUSEPORT)."""
        self._server = self._listen(host, port, reuse_port)
        self.port = self._server.port
        self._daemons.spawn(self._sweep(), "sweep the connections (timeouts, drain, read batches)")
        self._daemons.spawn(self._watch_bus(), "follow the bus")
        self._daemons.spawn(self._upkeep(), "renew leases, recheck keys, publish statistics")
        return self.port

    async def start_tls(
        self, host: str, port: int, context: ssl.SSLContext, *, reuse_port: bool = False
    ) -> int:
        """Listen for RTMPS too: the same protocol inside TLS (ingest/tls.py)."""
        self._tls_server = self._listen(host, port, reuse_port, context)
        self.tls_port = self._tls_server.port
        return self.tls_port

    def _listen(
        self, host: str, port: int, reuse_port: bool, context: ssl.SSLContext | None = None
    ) -> Listener:
        return Listener(
            bind(host, port, reuse_port=reuse_port),
            lambda: RtmpProtocol(self, tls=context is not None),
            ssl_context=context,
            ssl_handshake_timeout=self.config.handshake_timeout,
        )

    def opened(self, proto: RtmpProtocol) -> None:
        self.connections.add(proto)
        self._idle.clear()

    def closed(self, proto: RtmpProtocol) -> None:
        self.connections.discard(proto)
        self.poller.release(proto)
        self.publishers.pop(proto.id, None)
        self._left.set()
        if not self.connections:
            self._idle.set()

    async def _gone(self, protos: list[RtmpProtocol]) -> None:
        """Return once none of these connections is open."""
        while any(proto in self.connections for proto in protos):
            self._left.clear()
            await self._left.wait()

    @contextlib.contextmanager
    def admitting(self) -> Iterator[None]:
        """Mark an admission under way (see after_admissions)."""
        self._admitting += 1
        self._not_admitting.clear()
        try:
            yield
        finally:
            self._admitting -= 1
            if not self._admitting:
                self._not_admitting.set()

    async def after_admissions(self, limit: float) -> None:
        """Wait, at most ``limit`` seconds, until no admission is under way.

        Bookkeeping yields to admissions: in a storm of reconnecting encoders, each
        one hears Publish.Start before the node writes down those admitted earlier.
        """
        if self._admitting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._not_admitting.wait(), limit)

    async def wait_idle(self) -> None:
        """Return once no connection is open."""
        await self._idle.wait()

    def spawn(self, coroutine: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        """Run short work nobody waits for; a failure is logged as "could not <what>"."""
        return self._background.spawn(coroutine, what)

    async def announce(self, changes: list[StatusChanged], channel_name: str) -> None:
        """Status changes, committed already: one log line each, then the bus."""
        for change in changes:
            grace = ""
            if change.grace_until is not None:
                grace = f" grace={max(0.0, change.grace_until - time.time()):.0f}s"
            log.info(
                "channel=%s status=%s reason=%r session=%s%s",
                channel_name,
                change.status,
                change.reason,
                change.session_id,
                grace,
            )
            await self.publish_event(change)

    async def publish_event(self, event: BusEvent) -> None:
        """Best effort on the bus: lifecycle events are in the database outbox already."""
        try:
            await self.bus.publish(event)
        except StateUnavailable as exc:
            log.warning("event bus unreachable, %s not announced: %s", type(event).__name__, exc)

    # Background duties ----------------------------------------------------------------------

    async def _sweep(self) -> None:
        last = self.loop.time()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = self.loop.time()
            elapsed, last = now - last, now
            for proto in list(self.connections):
                conn = proto.conn
                if proto.linger_until is not None:
                    if now >= proto.linger_until and proto.transport is not None:
                        proto.transport.abort()
                    continue
                if now >= conn.deadline():
                    try:
                        conn.handle_timer(now)
                    except ProtocolError as exc:
                        self.guard.counts[_TIMEOUTS.get(type(exc), "timeout")] += 1
                        proto.abort(str(exc))
            if self.drain_deadline is not None and time.time() >= self.drain_deadline:
                for proto in list(self.publishers.values()):
                    proto.stop_publish("This ingest server is shutting down.", "drained")
            self._watch_media()
            self._batch_reads(elapsed)

    def _batch_reads(self, elapsed: float) -> None:
        """Flowing publishers go to the read poller (polling.py); the rest (RTMPS) have
        their receive low-water mark retuned (batching.py)."""
        batch = self.upkeep.read_batch
        if batch <= 0:
            return
        limit = min(self.config.read_buffer_size // 2, batching.MAX_MARK)
        poller = self.poller
        for proto in list(self.publishers.values()):
            transport = proto.transport
            if transport is None or transport.is_closing() or proto in poller:
                continue
            total = proto.conn.counters.media_bytes
            sent, proto.marked_bytes = total - proto.marked_bytes, total
            if sent > 0 and elapsed > 0 and poller.wants(sent / elapsed) and poller.take(proto):
                continue  # media flows, at a pace a round a tenth of a second keeps up with
            if not batching.SUPPORTED:
                continue
            mark = batching.next_mark(proto.read_mark, sent, elapsed, batch, limit)
            if mark != proto.read_mark and batching.set_mark(transport, mark):
                proto.read_mark = mark

    def _watch_media(self) -> None:
        """Tell the status machine when media starts flowing, stalls, or flows again.

        Cheap (two integers per publisher); the rare changes go to the database.
        """
        if self.recorder is None:
            return
        now = time.time()
        for proto in list(self.publishers.values()):
            grant = proto.grant
            if grant is None:
                continue
            counters = proto.conn.counters
            seen = counters.video_messages + counters.audio_messages
            if seen != proto.media_seen:
                self.media_arrived(proto, seen, now)
            elif proto.media_live and now - proto.media_at >= self.upkeep.stall_after:
                proto.media_live = False
                proto.journal(self._media_changed(proto, grant.channel_id, flowing=False))

    def media_arrived(self, proto: RtmpProtocol, seen: int, now: float) -> None:
        """Media moved on; the first after a publish or a stall tells the status machine."""
        proto.media_seen, proto.media_at = seen, now
        if not proto.media_live and proto.grant is not None and self.recorder is not None:
            proto.media_live = True
            if proto.start_unrecorded:
                proto.first_media.set()  # the start's transaction records it too
            else:
                proto.journal(self._media_changed(proto, proto.grant.channel_id, flowing=True))

    async def _media_changed(self, proto: RtmpProtocol, channel_id: int, *, flowing: bool) -> None:
        if self.recorder is None:
            return
        token = proto.grant.lease.token if proto.grant else None  # a stale one changes nothing
        changes = await self.recorder.media(
            channel_id, flowing=flowing, grace=proto.grace, node=self.node_name, token=token
        )
        name = proto.grant.channel_name if proto.grant else str(channel_id)
        await self.announce(changes, name)

    async def _upkeep(self) -> None:
        upkeep = self.upkeep
        last_recheck = last_stats = last_summary = self.loop.time()
        while True:
            await asyncio.sleep(upkeep.renew_every)
            await self._renew_leases()
            now = self.loop.time()
            if self.checker is not None and now - last_recheck >= upkeep.recheck_keys_every:
                last_recheck = now
                await self._recheck_keys()
            if now - last_stats >= upkeep.stats_every:
                last_stats = now
                await self._publish_stats()
            if now - last_summary >= upkeep.summary_every:
                last_summary = now
                await self._save_summaries()

    async def _save_summaries(self) -> None:
        """Session history stays current, so a lost node's last minutes are not lost."""
        if self.recorder is None:
            return
        await self.recorder.summaries(
            {
                proto.session_id: proto.summary(running=True)
                for proto in list(self.publishers.values())
                if proto.session_id is not None
            }
        )

    async def _renew_leases(self) -> None:
        """Renew the lease of every publisher whose media flowed since the last renewal.

        A silent publisher is not renewed (that is what lets its owner's reconnect take
        the channel over), but it is checked: once another publisher holds its channel,
        it is cut here, even if TCP has not noticed that it is gone.
        """
        if self.locks is None:
            return
        flowing, silent = [], []
        for proto in list(self.publishers.values()):
            counters = proto.conn.counters
            seen = counters.video_messages + counters.audio_messages
            if proto.grant is None:
                continue
            if seen != proto.renewed_messages:
                proto.renewed_messages = seen
                flowing.append(proto)
            else:
                silent.append(proto)
        await asyncio.gather(
            *(self._renew(proto) for proto in flowing), *(self._check(proto) for proto in silent)
        )

    async def _renew(self, proto: RtmpProtocol) -> None:
        grant, locks = proto.grant, self.locks
        if grant is None or locks is None:
            return
        try:
            lease = await locks.renew(grant.lease)
            if lease is None:  # expired while silent; take it back if nobody else did
                if proto.grant is not grant:
                    return  # the publish ended (and released it) while we asked
                lease = await locks.acquire(
                    grant.channel_id, grant.lease.owner, grant.lease.node, grant.lease.token
                )
                if lease is not None and proto.grant is not grant:
                    await locks.release(lease)  # ended while we took it back: let it go
                    return
        except (StateUnavailable, OSError) as exc:
            log.warning("conn=%s could not renew its lease: %r", proto.id, exc)
            return
        if lease is None:
            proto.stop_publish("Another encoder took over this channel.", "lease lost")
        elif proto.grant is grant:
            proto.grant = dataclasses.replace(grant, lease=lease)

    async def _check(self, proto: RtmpProtocol) -> None:
        grant, locks = proto.grant, self.locks
        if grant is None or locks is None:
            return
        try:
            holder = await locks.holder(grant.channel_id)
        except (StateUnavailable, OSError):
            return
        if holder is not None and holder.token != grant.lease.token:
            proto.stop_publish("Another encoder took over this channel.", "lease lost")

    async def _recheck_keys(self) -> None:
        checker = self.checker
        if checker is None:
            return
        for proto in list(self.publishers.values()):
            grant = proto.grant
            if grant is None:
                continue
            if await checker.key_state(grant.key_id) is KeyState.REVOKED:
                proto.stop_publish("Stream key was reset.", "key revoked")

    async def _publish_stats(self) -> None:
        """Sample every live stream's meter, judge its health, and tell whoever listens."""
        now = time.time()
        batch: list[StreamStats] = []
        publishers = list(self.publishers.values())
        if self.thumbnails is not None:
            self.thumbnails.arm(publishers, now)
        for proto in publishers:
            grant, meter = proto.grant, proto.meter
            if grant is None or meter is None:
                continue
            counters = proto.conn.counters
            meter.sample(now, counters)
            snapshot = meter.snapshot(now)
            health = assess(snapshot, self.upkeep.health, now)
            proto.health = health.as_dict()
            proto.health_seen.update(health.codes)
            batch.append(
                StreamStats(
                    grant.channel_id,
                    proto.session_id,
                    self.node_name,
                    now,
                    counters.as_dict(),
                    dict(proto.codecs),
                    snapshot.as_dict(),
                    proto.health,
                    proto.thumbnail_at,
                    self.outputs.status(grant.channel_id, now) if self.outputs is not None else [],
                )
            )
        if batch:
            with contextlib.suppress(StateUnavailable):  # best effort: fresh ones come next
                await self.bus.publish_stats(batch)

    async def _watch_bus(self) -> None:
        subscription = self.bus.subscribe()
        try:
            async for event in subscription:
                try:
                    self._on_bus_event(event)
                except Exception:
                    log.exception("could not act on %s", type(event).__name__)
        finally:
            subscription.close()

    def _on_bus_event(self, event: BusEvent) -> None:
        if isinstance(event, KeyRevoked):
            if self.checker is not None:  # a revocation made by another process
                self.spawn(
                    self.checker.revoked(event.key_id, event.channel_id), "forget a revoked key"
                )
            self.stop_key(event.key_id, "Stream key was reset.", "key revoked")
        elif isinstance(event, StopRequested):
            for proto in list(self.publishers.values()):
                grant = proto.grant
                if grant is None or grant.channel_id != event.channel_id:
                    continue
                if event.before_token is None or grant.lease.token < event.before_token:
                    description = (
                        "Stream stopped by an administrator."
                        if event.reason == "kicked"
                        else "Another encoder took over this channel."
                    )
                    proto.stop_publish(description, event.reason)
        elif isinstance(event, ThumbnailsWanted):
            if self.thumbnails is not None:
                self.thumbnails.want(event)
        elif isinstance(event, OutputsChanged):
            if self.outputs is not None:
                self.outputs.changed(event.channel_id)
        elif isinstance(event, PublishStarted) and event.node != self.node_name:
            if self.outputs is not None:
                self.outputs.elsewhere(event.channel_id)
        elif isinstance(event, DrainRequested) and event.node in (self.node_name, self.server_name):
            self.spawn(self._drain(event.deadline), "drain")

    # Operations ---------------------------------------------------------------------------

    def stop_key(self, key_id: str, description: str, reason: str) -> int:
        stopped = 0
        for proto in list(self.publishers.values()):
            if proto.grant is not None and proto.grant.key_id == key_id:
                proto.stop_publish(description, reason)
                stopped += 1
        return stopped

    async def _drain(self, deadline: float) -> None:
        target = await self.peers.elsewhere(None) if self.peers is not None else None
        self.start_drain(deadline, target)

    def start_drain(self, deadline: float, target: str | None = None) -> None:
        """Admit nobody new; ask capable publishers to move; close the rest at the deadline."""
        self.draining = True
        self.drain_deadline = deadline
        self.drain_target = target
        log.info(
            "draining: %d publishers, deadline in %.0fs",
            len(self.publishers),
            max(0.0, deadline - time.time()),
        )
        if target is not None:
            self._send_away(target, "This ingest server is draining.")

    def _send_away(self, target: str, description: str) -> list[RtmpProtocol]:
        """Ask every publisher that can reconnect to go to target; those asked."""
        moving = [proto for proto in self.publishers.values() if proto.can_reconnect]
        for proto in moving:
            proto.moving = True  # its end is a move: the monitor keeps it Reconnecting
            proto.conn.request_reconnect(target, description)
            proto.flush()
        return moving

    async def shutdown(self, grace: float) -> None:
        """Stop listening and end every connection within about twice `grace` seconds.

        Publishers that can reconnect are first sent to another node and given
        `grace` seconds to leave; the rest hear "Server is shutting down." Either
        way their sessions wait in Reconnecting for them to come back.
        """
        servers = [server for server in (self._server, self._tls_server) if server is not None]
        for server in servers:
            server.close()
        self.draining = True
        target = None
        if self.peers is not None and any(p.can_reconnect for p in self.publishers.values()):
            with contextlib.suppress(TimeoutError):
                target = await asyncio.wait_for(self.peers.elsewhere(None), grace)
        if target is not None:
            moving = self._send_away(target, "This ingest server is shutting down.")
            log.info("shutting down: %d publishers asked to move to %s", len(moving), target)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gone(moving), grace)
        for proto in list(self.connections):
            if proto.grant is not None:
                proto.stop_publish("Server is shutting down.", "server shutdown")
            else:
                proto.abort("server shutdown")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        for proto in list(self.connections):
            proto.abort("server shutdown")
        await self._idle.wait()  # abort() closes at the next loop iteration
        self.poller.close()
        await self._daemons.cancel()
        await self._background.settle()
        if self.thumbnails is not None:
            await self.thumbnails.close()
        if self.outputs is not None:
            await self.outputs.close()
        for server in servers:
            await server.wait_closed()
