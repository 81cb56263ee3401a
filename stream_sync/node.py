"""A stream-sync process: the ingest, api and monitor roles, alone or together.

`serve` runs all three in one process with embedded defaults (SQLite, in-process
state). In a cluster each role runs as its own process (`stream-sync ingest`, `api`,
`monitor`), all pointed at one database and one Redis; the same code either way.

With `--workers N` (N > 1) the ingest role is carried by N worker processes
(stream_sync/workers/): the node the operator started supervises them and runs the
other roles; each worker is a Node of its own with the ingest role only. Two names
follow from that. The server name (`settings.server_name`, `Node.server_name`) is
what channels are mapped to, what `ingest drain` and the ingest-servers catalog use,
and whose URL encoders get. The node id (`Node.name`) identifies one ingest process
in the registry, in leases and in session rows: the server name itself for a single
process, `<server-name>-w<i>` for worker i, so a dead worker's channels are handed
over by the node-lost logic like any dead node's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .accounts import users
from .accounts.throttle import LoginThrottle
from .admin.server import AdminServer
from .api.app import create_app
from .api.context import ApiContext, LiveStream
from .api.live import BusLiveView
from .api.ratelimit import RequestLimiter
from .audit.refusals import RefusalAggregator
from .background import Background
from .credentials import service
from .credentials.server_secrets import ServerSecrets, load_or_create
from .db.engine import (
    create_engine,
    session_factory,
    sqlite_url,
    upgrade,
    warm_pool,
)
from .db.models import Channel, IngestServer, PublishSession
from .db.retention import purge
from .ingest import tls
from .ingest.admission import KeyAdmission, TakeoverPolicy
from .ingest.guard import Guard
from .ingest.keycheck import CacheTimes, KeyChecker
from .ingest.outputs import RECORD, OutputsHub, Sink
from .ingest.playback_http import playback_app
from .ingest.protocol import RtmpProtocol
from .ingest.recorder import DatabaseRecorder
from .ingest.recording import RecordingLimits, Recordings
from .ingest.relay import Push
from .ingest.server import IngestServer as RtmpIngest
from .ingest.server import Upkeep
from .ingest.thumbnails import Thumbnailer, ThumbnailPolicy
from .monitor import lifecycle
from .monitor.grace import expire_grace_periods
from .monitor.health_changes import HealthWatcher
from .monitor.nodes import NodeWatcher
from .operations import ControlPlane
from .outputs.destinations import PushTarget
from .outputs.plan import ChannelOutputs, load_outputs
from .recordings import files as recording_files
from .recordings import upkeep as recording_upkeep
from .settings import Settings, url_host
from .state.coalesce import Coalescer
from .state.codec import decode_event
from .state.engines import StateEngines, open_state
from .state.errors import StateUnavailable
from .state.interfaces import BusEvent, NodeInfo, RecordingDeleted
from .webhooks.runner import Webhooks
from .workers import worker_node_id
from .workers.link import worker_environment
from .workers.port import PortReservation
from .workers.supervisor import Supervisor

log = logging.getLogger("stream_sync")
RETENTION_INTERVAL = 6 * 3600.0
# Events another process on this machine may inject through the admin socket.
_ADMIN_SOCKET_EVENTS = frozenset({"KeyRevoked", "StopRequested", "DrainRequested"})


class Role(StrEnum):
    INGEST = "ingest"
    API = "api"
    MONITOR = "monitor"


ALL_ROLES = frozenset(Role)


def prepare_data_dir(path: Path) -> None:
    """The data folder holds secrets: private to its owner from the first moment."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("data folder %s is accessible by other users (mode %o)", path, mode)


@dataclass
class Store:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    secrets: ServerSecrets


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The database (migrated to the current schema) and the server secrets."""
    prepare_data_dir(settings.data_dir)
    secrets = load_or_create(settings.data_dir)
    engine = create_engine(settings.database_url or sqlite_url(settings.data_dir))
    try:
        await upgrade(engine)
        yield Store(engine, session_factory(engine), secrets)
    finally:
        await engine.dispose()


WS_MAX_MESSAGE = 4096  # dashboards send nothing; anything bigger closes the socket
# A server that closes an idle connection first races the client's next request on it,
# which then fails with no response; so idle connections outlive the clients' own expiry
# (httpx 5 s, the same as uvicorn's default) and a load balancer's (commonly 60 s).
HTTP_KEEP_ALIVE = 65  # seconds
WARM_DATABASE_CONNECTIONS = 8
WARM_REDIS_CONNECTIONS = 12


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our event loop: the node owns the signals, not uvicorn.

    Its main loop ticks once a second (the Date header), not ten times, and ends at
    once on `exit()`: each process serves HTTP, and an idle one woke for nothing.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield

    def exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864_000  # uvicorn's once-a-second tick, every time
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 1.0)


class Node:
    """One process's share of the roles.

    `ingest_workers` > 1 with no `worker_index`: this process supervises that many
    ingest workers instead of running ingest itself. `worker_index` i: this process
    is worker i of `ingest_workers` (ingest role only, no admin socket, SO_REUSEPORT).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        roles: frozenset[Role] = ALL_ROLES,
        *,
        ingest_workers: int = 1,
        worker_index: int | None = None,
    ) -> None:
        if worker_index is not None and (
            roles != {Role.INGEST} or not 1 <= worker_index <= ingest_workers
        ):
            raise ValueError("a worker runs the ingest role only, as one of ingest_workers")
        self.settings = settings
        self.store = store
        self.roles = roles
        self.ingest_workers = ingest_workers
        self.worker_index = worker_index
        self.server_name = settings.server_name
        self._node_id = (
            self.server_name
            if worker_index is None
            else worker_node_id(self.server_name, worker_index)
        )
        # A server's capacity is shared by its workers (rounded up: never below one each).
        self.capacity = math.ceil(settings.capacity / ingest_workers)
        self.capacity_mbps = settings.capacity_mbps / ingest_workers
        self.sessions = store.sessions
        self.state: StateEngines = open_state(
            store.sessions,
            redis_url=settings.redis_url,
            prefix=settings.redis_prefix,
            lock_ttl=settings.lock_ttl,
            control_only=roles == {Role.INGEST},  # it acts on control events alone
        )
        self.bus = self.state.bus
        self.checker = KeyChecker(
            sessions=store.sessions,
            secrets=store.secrets,
            cache=self.state.cache,
            times=CacheTimes(
                fresh_for=settings.key_cache_fresh, unknown_ttl=settings.key_cache_negative
            ),
        )
        self.control = ControlPlane(
            sessions=store.sessions, secrets=store.secrets, bus=self.bus, checker=self.checker
        )
        self.refusals = RefusalAggregator(store.sessions)
        # Webhooks are sent by the monitor role: one process per cluster sends.
        self.webhooks: Webhooks | None = None
        if Role.MONITOR in roles:
            self.webhooks = Webhooks(
                store.sessions,
                store.secrets,
                self.bus,
                policy=settings.webhook_policy(),
                limits=settings.webhook_limits(),
            )
        self.live = BusLiveView(self.bus, self._default_rtmp_url, lambda: self.rtmps_url)
        self.rtmp_port = 0
        self.rtmps_port = 0
        self.http_port = 0
        self._tls: ssl.SSLContext | None = None  # RTMPS, when this process listens for it
        self._ingest: RtmpIngest | None = None
        self._recorder: DatabaseRecorder | None = None
        self._recordings: Recordings | None = None  # this process's, when it runs ingest
        self._workers: Supervisor | None = None  # when this process supervises workers
        self._port: PortReservation | None = None  # the RTMP port the workers share
        self._tls_port: PortReservation | None = None  # and the RTMPS one
        self._admin: AdminServer | None = None
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.playback_port = 0
        self._playback: _EmbeddedUvicorn | None = None
        self._playback_task: asyncio.Task[None] | None = None
        self._daemons = Background(log)  # loops that run until stop, which cancels them
        self._mbps = 0.0

    @property
    def name(self) -> str:
        """The node id: this ingest process in the registry, leases and sessions."""
        return self._node_id

    @property
    def supervises_workers(self) -> bool:
        return Role.INGEST in self.roles and self.worker_index is None and self.ingest_workers > 1

    @property
    def ingest(self) -> RtmpIngest:
        if self._ingest is None:
            raise RuntimeError("this node does not run the ingest role")
        return self._ingest

    @property
    def rtmp_url(self) -> str:
        return self.settings.public_rtmp_url(self.rtmp_port)

    @property
    def rtmps_url(self) -> str | None:
        """The bound RTMPS port's URL; before it is bound (or elsewhere), the configured one."""
        return self.settings.public_rtmps_url(self.rtmps_port or None)

    def reload_tls(self) -> None:
        """SIGHUP: load the renewed certificate; a supervisor passes it to its workers."""
        if self._workers is not None:
            log.info("reloading the TLS certificate of %d ingest workers", len(self._workers.pids))
            self._workers.signal_all(signal.SIGHUP)
        files = self.settings.tls_files()
        if self._tls is not None and files is not None:
            tls.reload(self._tls, *files)

    def _daemon(self, coroutine: Coroutine[Any, Any, Any], what: str) -> None:
        """A loop of the node's, run until stop; one that fails is logged at once."""
        self._daemons.spawn(coroutine, what)

    # Start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        if self.worker_index is None:  # a worker's supervisor holds the data folder
            self._admin = AdminServer(
                settings.data_dir,
                {
                    "info": self._op_info,
                    "streams.list": self._op_streams,
                    "bus.publish": self._op_bus,
                    "stats": self._op_stats,
                },
            )
            await self._admin.start()
        if self.supervises_workers:
            await self._start_workers()
        elif Role.INGEST in self.roles:
            await self._start_ingest()
            if Role.API not in self.roles:
                await self._start_playback()
        if Role.API in self.roles:
            await self._seed_live_view()
            self.live.start()
            await self._start_http()
        if Role.MONITOR in self.roles:
            watcher = NodeWatcher(
                registry=self.state.registry,
                bus=self.bus,
                close_sessions=self._close_node_sessions,
                open_nodes=self._nodes_with_open_sessions,
                interval=settings.heartbeat_interval,
            )
            self._daemon(watcher.run(), "watch for dead nodes")
            self._daemon(
                expire_grace_periods(self.sessions, self.bus, self._publish),
                "expire grace periods",
            )
            self._daemon(self._retention(), "apply retention")
            if self.webhooks is not None:
                webhooks = self.webhooks
                health = HealthWatcher(
                    self.sessions,
                    self.bus,
                    settle=settings.health_change_after,
                    clock=webhooks.now,
                    staged=webhooks.committed,
                )
                self._daemon(health.run(), "watch stream health")
                self._daemon(webhooks.run(), "deliver webhooks")
        log.info(
            "roles %s, state %s, data folder %s, server name %s%s",
            ",".join(sorted(self.roles)),
            "redis" if self.state.shared else "in-process",
            settings.data_dir,
            self.server_name,
            f", node {self.name}" if self.name != self.server_name else "",
        )
        await self._first_start_hints()

    async def _hand_over_previous_run(self) -> None:
        left = await self._close_node_sessions(self.name)
        if left:
            log.info("%d sessions left open by a previous run now wait for their owners", len(left))
            for event in left:
                await self._publish(event)

    async def _start_workers(self) -> None:
        """Reserve the RTMP port, then start the workers and wait until each listens."""
        settings = self.settings
        self._port = PortReservation.take(settings.host, settings.rtmp_port)
        self.rtmp_port = self._port.port
        if settings.tls:
            self._tls_port = PortReservation.take(settings.host, settings.rtmps_port)
            self.rtmps_port = self._tls_port.port
        await self._hand_over_previous_run()  # streams of a single-process run of this server
        worker_settings = settings.model_copy(
            update={
                "rtmp_port": self.rtmp_port,
                "rtmps_port": self.rtmps_port,
                "workers": self.ingest_workers,
            }
        )
        self._workers = Supervisor(
            count=self.ingest_workers,
            command=lambda i: [
                sys.executable, "-m", "stream_sync", "ingest", "--worker-index", str(i)
            ],
            name=lambda i: worker_node_id(self.server_name, i),
            env=worker_environment(worker_settings),
            stop_timeout=settings.shutdown_grace + 10.0,
        )  # fmt: skip
        await self._workers.start()
        log.info("%d ingest workers share %s", self.ingest_workers, self._urls())

    async def _start_ingest(self) -> None:
        settings = self.settings
        await self._hand_over_previous_run()
        admission = KeyAdmission(
            checker=self.checker,
            locks=self.state.locks,
            fencing=self.state.fencing,
            node=self,
            app=settings.rtmp_app,
            policy=TakeoverPolicy(settings.takeover_policy),
            stale_after=settings.stale_after,
            enforce_mapping=settings.enforce_mapping,
        )
        self._recorder = DatabaseRecorder(
            self.sessions, refusals=self.refusals, default_grace=settings.grace_period
        )
        self._ingest = RtmpIngest(
            config=settings.rtmp_config(),
            admission=admission,
            bus=self.bus,
            node_name=self.name,
            server_name=self.server_name,
            locks=self.state.locks,
            checker=self.checker,
            recorder=self._recorder,
            peers=self,
            upkeep=Upkeep(
                stall_after=settings.stale_after,
                read_batch=settings.read_batch,
                health=settings.health_thresholds(),
            ),
            admission_timeout=settings.admission_timeout,
            guard=Guard(settings.guard_limits()),
            thumbnails=Thumbnailer(
                self.state.thumbnails,
                ThumbnailPolicy(
                    settings.thumbnail_interval,
                    settings.thumbnail_watched_interval,
                    settings.thumbnail_width,
                    settings.thumbnail_cpu_share,
                    self.ingest_workers if self.worker_index is not None else 1,
                ),
            )
            if settings.thumbnail_interval
            else None,
            outputs=self._outputs_hub(),
        )
        if self._ingest.thumbnails is not None:
            await self._ingest.thumbnails.warm_up()
        await self._recover_recordings()
        await self._warm_connections()
        host, shared = settings.host, self.worker_index is not None
        self.rtmp_port = await self._ingest.start(host, settings.rtmp_port, reuse_port=shared)
        if (files := settings.tls_files()) is not None:
            self._tls = tls.server_context(*files)
            self.rtmps_port = await self._ingest.start_tls(
                host, settings.rtmps_port, self._tls, reuse_port=shared
            )
        self._daemon(self.refusals.run(), "aggregate refused publishes")
        self._daemon(self._heartbeat(), "keep the node registered")
        self._daemon(self._recording_retention(), "apply recording retention")
        self._daemon(self._recording_deletions(), "delete recordings")
        log.info("RTMP ingest listening on %s", self._urls())

    def _outputs_hub(self) -> OutputsHub:
        """Pushes (the operator's and each channel's targets) and recordings."""
        settings, store = self.settings, self.store
        push_tls = settings.push_tls()

        async def load(channel_ids: Sequence[int]) -> list[ChannelOutputs]:
            async with store.sessions() as session:
                return await load_outputs(session, store.secrets, channel_ids)

        recordings = self._recordings = Recordings(
            folder=settings.recordings_path(),
            node=self.name,
            limits=RecordingLimits(
                max_bytes=settings.recording_max_bytes,
                max_seconds=settings.recording_max_seconds,
            ),
            sessions=store.sessions,
        )

        def make(key: Hashable, source: RtmpProtocol, channel_name: str) -> Sink:
            if isinstance(key, PushTarget):
                return Push(key, channel_name, push_tls)
            if key == RECORD:
                return recordings.sink(source, channel_name)
            raise ValueError(f"no output of kind {key!r} on this node")

        return OutputsHub(
            make=make,
            global_targets=settings.push_target_list(),
            load=Coalescer(load, linger=0.1),  # a spread storm's reads together, too
        )

    def _urls(self) -> str:
        rtmps = self.rtmps_url
        return self.rtmp_url if rtmps is None else f"{self.rtmp_url} and {rtmps}"

    async def _start_http(self) -> None:
        sock = _listening_socket(self.settings.host, self.settings.http_port)
        self.http_port = sock.getsockname()[1]
        context = ApiContext(
            settings=self.settings,
            sessions=self.sessions,
            secrets=self.store.secrets,
            control=self.control,
            live=self.live,
            throttle=LoginThrottle(),
            requests=RequestLimiter(self.settings.api_rate_limit, self.settings.api_burst),
            dependencies=self._dependencies,
            nodes=self._registered_nodes,
            thumbnails=self.state.thumbnails,
            playback=self._ingest.playback if self._ingest is not None else None,
        )
        settings = self.settings
        if self._tls is None and (files := settings.tls_files()) is not None:
            self._tls = tls.server_context(*files)
        shared_tls = self._tls  # HTTPS with RTMPS's certificate: one SIGHUP renews both
        config = uvicorn.Config(
            create_app(context),
            ssl_context_factory=None if shared_tls is None else lambda *_: shared_tls,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=HTTP_KEEP_ALIVE,
            ws="websockets-sansio",
            ws_max_size=WS_MAX_MESSAGE,
            ws_ping_interval=20.0,  # a dashboard on a dead network is noticed and dropped
            ws_ping_timeout=20.0,
        )
        self._http = _EmbeddedUvicorn(config)
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve([sock]))
        scheme = "http" if shared_tls is None else "https"
        log.info("HTTP listening on %s://%s:%d", scheme, url_host(settings.host), self.http_port)

    async def _warm_connections(self) -> None:
        """Before the port opens: as many connections as a storm's admissions use at once
        (about two batches in flight for each of their database and Redis questions)."""
        await warm_pool(self.store.engine, WARM_DATABASE_CONNECTIONS)
        if self.state.redis is not None:
            await self.state.redis.warm(WARM_REDIS_CONNECTIONS)

    async def _start_playback(self) -> None:
        """An ingest process without the API serves its own streams' playback (issue 11)."""
        settings = self.settings
        base = settings.playback_port
        sock = _listening_socket(settings.host, base + (self.worker_index or 0) if base else 0)
        self.playback_port = sock.getsockname()[1]
        secure = self._tls
        config = uvicorn.Config(
            playback_app(self.ingest.playback, self.store.secrets, settings.recordings_path()),
            ssl_context_factory=None if secure is None else lambda *_: secure,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=HTTP_KEEP_ALIVE,
        )
        self._playback = _EmbeddedUvicorn(config)
        self._playback_task = asyncio.get_running_loop().create_task(self._playback.serve([sock]))
        log.info("playback listening on %s", self.playback_url)

    @property
    def playback_url(self) -> str:
        """Where browsers fetch this process's streams from; empty if it serves none."""
        port = self.http_port if Role.API in self.roles else self.playback_port
        if not port:
            return ""
        return self.settings.public_http_url(port, secure=self._tls is not None)

    async def stop(self) -> None:
        if self._workers is not None:
            await self._workers.stop()  # first: their publishers end while the rest runs
        for reservation in (self._port, self._tls_port):
            if reservation is not None:
                reservation.close()
        if self._recorder is not None:
            self._recorder.stop_waiting()  # a database down must not hold the shutdown
        if self._ingest is not None:
            await self._ingest.shutdown(self.settings.shutdown_grace)  # recordings finished
            with contextlib.suppress(StateUnavailable):
                await self.state.registry.remove(self.name)
        if self._recordings is not None:
            await self._recordings.close()
        await self._daemons.cancel()  # the refusal aggregator flushes what it holds as it stops
        await self.live.stop()
        for server, serving in (
            (self._http, self._http_task),
            (self._playback, self._playback_task),
        ):
            if server is not None and serving is not None:
                server.exit()
                await serving
        if self._admin is not None:
            await self._admin.stop()
        await self.checker.settle()
        await self.state.close()

    async def _first_start_hints(self) -> None:
        if Role.API not in self.roles:
            return
        data_dir = self.settings.data_dir
        async with self.sessions() as session:
            if not await users.count_admins(session):
                log.info(
                    "no admin account yet: stream-sync users create EMAIL --admin --data-dir %s",
                    data_dir,
                )
        async with self.sessions() as session:
            if not await service.list_channels(session):
                log.info(
                    "no channels yet: stream-sync channels create NAME --data-dir %s", data_dir
                )

    # Background duties --------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Tell the cluster this node is alive, how loaded it is, and whether it drains."""
        interval = self.settings.heartbeat_interval
        last_bytes, last_time = 0, time.monotonic()
        while True:
            ingest = self.ingest
            media = sum(p.conn.counters.media_bytes for p in ingest.publishers.values())
            media += ingest.outputs.sent_bytes() if ingest.outputs is not None else 0
            now = time.monotonic()
            if now > last_time:
                self._mbps = max(0.0, media - last_bytes) * 8 / 1e6 / (now - last_time)
            last_bytes, last_time = media, now
            with contextlib.suppress(
                StateUnavailable
            ):  # logged by the engine; capacity checks fall back to local knowledge
                await self.state.registry.heartbeat(self._node_info(), ttl=interval * 3)
            await asyncio.sleep(interval)

    def _node_info(self) -> NodeInfo:
        return NodeInfo(
            node_id=self.name,
            rtmp_url=self.rtmp_url,
            capacity=self.capacity,
            capacity_mbps=self.capacity_mbps,
            publishers=len(self.ingest.publishers),
            mbps=round(self._mbps, 3),
            draining=self.ingest.draining,
            server=self.server_name,
            guard=dict(self.ingest.guard.counts),
            playback_url=self.playback_url,
        )

    async def _retention(self) -> None:
        while True:
            try:
                async with self.sessions() as session:
                    result = await purge(
                        session,
                        audit_days=self.settings.audit_retention_days,
                        sessions_days=self.settings.session_retention_days,
                        outbox_days=self.settings.outbox_retention_days,
                        deliveries_days=self.settings.webhook_retention_days,
                    )
                log.info("retention: %s", result)
            except Exception:
                log.exception("retention purge failed; will retry")
            await asyncio.sleep(RETENTION_INTERVAL)

    async def _recover_recordings(self) -> None:
        """Recordings a previous run of this node left open (a crash) are closed first."""
        if self._recordings is None:
            return
        try:
            closed = await recording_upkeep.recover(
                self.sessions, self._recordings.folder, self.name
            )
        except Exception:
            log.exception("recordings left open by a previous run not closed; next start")
            return
        if closed:
            log.info("%d recordings left open by a previous run were closed", closed)

    async def _recording_retention(self) -> None:
        """This node's recordings past ``recording_retention_days`` go, files and rows."""
        recordings, days = self._recordings, self.settings.recording_retention_days
        if recordings is None or not days:
            return
        while True:
            try:
                purged = await recording_upkeep.purge(
                    self.sessions,
                    recordings.folder,
                    self.name,
                    days=days,
                    writing=frozenset(recordings.writing),
                )
                if purged.rows or purged.files:
                    log.info("recording retention: %s", purged)
            except Exception:
                log.exception("recording retention failed; will retry")
            await asyncio.sleep(RETENTION_INTERVAL)

    async def _recording_deletions(self) -> None:
        """Recordings deleted through an API process elsewhere: their files here go too."""
        recordings = self._recordings
        if recordings is None:
            return
        subscription = self.bus.subscribe()
        try:
            async for event in subscription:
                if isinstance(event, RecordingDeleted) and event.node == self.name:
                    try:
                        await asyncio.to_thread(
                            recording_files.delete, recordings.folder, event.path
                        )
                    except (OSError, recording_files.UnsafePath) as exc:
                        log.warning("recording file not deleted: %s", type(exc).__name__)
        finally:
            subscription.close()

    async def _close_node_sessions(self, node: str) -> list[BusEvent]:
        """A node's streams are gone: their channels reconnect within grace, or go offline."""
        return list(
            await lifecycle.node_lost(
                self.sessions, node=node, now=time.time(), default_grace=self.settings.grace_period
            )
        )

    async def _nodes_with_open_sessions(self) -> set[str]:
        """Nodes the database believes carry a publish right now."""
        async with self.sessions() as session, session.begin():
            rows = await session.scalars(
                select(PublishSession.node)
                .where(PublishSession.ended_at.is_(None), PublishSession.publishing.is_(True))
                .distinct()
            )
            return set(rows.all())

    async def _seed_live_view(self) -> None:
        async with self.sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(
                        PublishSession.channel_id,
                        PublishSession.key_id,
                        PublishSession.id,
                        PublishSession.started_at,
                    ).where(PublishSession.ended_at.is_(None))
                )
            ).all()
        self.live.seed([(r[0], r[1], r[2], r[3].timestamp()) for r in rows])

    async def _publish(self, event: BusEvent) -> None:
        with contextlib.suppress(StateUnavailable):
            await self.bus.publish(event)

    async def _registered_nodes(self) -> list[NodeInfo]:
        try:
            return await self.state.registry.nodes()
        except StateUnavailable:
            return []

    async def _dependencies(self) -> dict[str, str]:
        return {"redis": await self.state.redis_status()}

    # The ingest node's view of itself and its peers (for admission) --------------------------

    def has_room(self) -> bool:
        ingest = self.ingest
        if ingest.draining or len(ingest.publishers) >= self.capacity:
            return False
        return not self.capacity_mbps or self._mbps < self.capacity_mbps

    async def elsewhere(self, channel_id: int | None) -> str | None:
        """Another server's URL, never a sibling worker's: they share this server's URL."""
        try:
            nodes = await self.state.registry.nodes()
        except StateUnavailable:
            return None
        candidates = [
            node for node in nodes if node.server_name != self.server_name and node.has_room
        ]
        if not candidates:
            return None
        mapped = await self._mapped_server(channel_id) if channel_id is not None else None
        preferred = [node for node in candidates if mapped and node.server_name == mapped[0]]
        best = preferred or sorted(candidates, key=lambda n: n.publishers / max(n.capacity, 1))
        return best[0].rtmp_url

    async def mapped_url(self, channel_id: int) -> str | None:
        """Channels map to servers: any worker of the mapped server takes the channel."""
        mapped = await self._mapped_server(channel_id)
        if mapped is None or mapped[0] == self.server_name:
            return None
        return mapped[1]

    async def _mapped_server(self, channel_id: int) -> tuple[str, str] | None:
        async with self.sessions() as session, session.begin():
            row = (
                await session.execute(
                    select(IngestServer.name, IngestServer.rtmp_url)
                    .join(Channel, Channel.ingest_server_id == IngestServer.id)
                    .where(Channel.id == channel_id)
                )
            ).one_or_none()
        return None if row is None else (row[0], row[1])

    def _default_rtmp_url(self) -> str:
        return self.rtmp_url if self.rtmp_port else self.settings.public_rtmp_url()

    # The live view of this node's own publishers (admin socket, tests) ------------------------

    def local_streams(self) -> dict[int, LiveStream]:
        if self._ingest is None:
            return {}
        now = asyncio.get_running_loop().time()
        streams = {}
        for proto in self._ingest.publishers.values():
            grant = proto.grant
            if grant is None:
                continue
            streams[grant.channel_id] = LiveStream(
                channel_id=grant.channel_id,
                key_id=grant.key_id,
                connection=proto.id,
                peer=proto.peer,
                uptime=now - (proto.publish_started_at or now),
                codecs=dict(proto.codecs),
                counters=proto.conn.counters.as_dict(),
                bytes_in=proto.conn.bytes_received,
            )
        return streams

    # Admin socket operations -------------------------------------------------------------

    async def _op_info(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "rtmp_url": self.rtmp_url if self.rtmp_port else None,
            "rtmps_url": self.rtmps_url if self.rtmps_port else None,
            "http_port": self.http_port,
            "pid": os.getpid(),
            "roles": sorted(self.roles),
            "server_name": self.server_name,
            "workers": self._workers.pids if self._workers is not None else [],
        }

    async def _op_streams(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            stream.as_dict() | {"channel_id": cid} for cid, stream in self.local_streams().items()
        ]

    async def _op_bus(self, request: dict[str, Any]) -> dict[str, Any]:
        await self.bus.publish(decode_event(request.get("event"), _ADMIN_SOCKET_EVENTS))
        return {"published": True}

    async def _op_stats(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "database_key_lookups": self.checker.database_lookups,
            "key_cache_available": self.checker.cache_available,
            "publishers": len(self._ingest.publishers) if self._ingest else 0,
            "draining": self._ingest.draining if self._ingest else False,
        }
