"""`stream-sync serve`: ingest, control plane and state in one process, embedded defaults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .accounts import users
from .accounts.throttle import LoginThrottle
from .admin.server import AdminServer
from .api.app import create_app
from .api.context import ApiContext, LiveStream
from .audit.refusals import RefusalAggregator
from .credentials import service
from .credentials.server_secrets import ServerSecrets, load_or_create
from .db.engine import create_engine, session_factory, sqlite_url, upgrade
from .db.retention import purge
from .ingest.admission import KeyAdmission
from .ingest.recorder import DatabaseRecorder
from .ingest.server import IngestServer
from .monitor import history
from .operations import ControlPlane
from .settings import Settings
from .state.codec import decode_event
from .state.inprocess import InProcessBus, InProcessLocks

log = logging.getLogger("stream_sync")
RETENTION_INTERVAL = 6 * 3600.0
# Events another process on this machine may inject through the admin socket.
_ADMIN_SOCKET_EVENTS = frozenset({"KeyRevoked"})


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


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our event loop: the node owns the signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class Node:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.sessions = store.sessions
        self.locks = InProcessLocks()
        self.bus = InProcessBus()
        self.control = ControlPlane(sessions=store.sessions, secrets=store.secrets, bus=self.bus)
        self.refusals = RefusalAggregator(store.sessions)
        self.rtmp_port = 0
        self.http_port = 0
        self._ingest: IngestServer | None = None
        self._admin: AdminServer | None = None
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []  # background work, cancelled on stop

    @property
    def ingest(self) -> IngestServer:
        if self._ingest is None:
            raise RuntimeError("the node is not started")
        return self._ingest

    @property
    def rtmp_url(self) -> str:
        return self.settings.public_rtmp_url(self.rtmp_port)

    def _background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coroutine))

    async def start(self) -> None:
        settings = self.settings
        async with self.sessions() as session:
            closed = await history.close_open_sessions(
                session, node=settings.server_name, reason="node restarted"
            )
        if closed:
            log.info("closed %d publish sessions left open by a previous run", closed)
        self._admin = AdminServer(
            settings.data_dir,
            {"info": self._op_info, "streams.list": self._op_streams, "bus.publish": self._op_bus},
        )
        await self._admin.start()
        admission = KeyAdmission(
            sessions=self.sessions,
            secrets=self.store.secrets,
            locks=self.locks,
            app=settings.rtmp_app,
        )
        self._ingest = IngestServer(
            config=settings.rtmp_config(),
            admission=admission,
            bus=self.bus,
            recorder=DatabaseRecorder(
                self.sessions, node=settings.server_name, refusals=self.refusals
            ),
            admission_timeout=settings.admission_timeout,
        )
        self.rtmp_port = await self._ingest.start(settings.host, settings.rtmp_port)
        await self._start_http()
        self._background(self.refusals.run())
        self._background(self._retention())
        log.info("RTMP ingest listening on %s", self.rtmp_url)
        log.info("HTTP listening on http://%s:%d", settings.host, self.http_port)
        log.info("data folder %s, server name %s", settings.data_dir, settings.server_name)
        await self._first_start_hints()

    async def _first_start_hints(self) -> None:
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

    async def _start_http(self) -> None:
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.settings.host, self.settings.http_port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.setblocking(False)
        self.http_port = sock.getsockname()[1]
        context = ApiContext(
            settings=self.settings,
            sessions=self.sessions,
            secrets=self.store.secrets,
            control=self.control,
            live=self,
            throttle=LoginThrottle(),
        )
        config = uvicorn.Config(
            create_app(context), log_config=None, access_log=False, lifespan="off"
        )
        self._http = _EmbeddedUvicorn(config)
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve([sock]))

    async def _retention(self) -> None:
        while True:
            try:
                async with self.sessions() as session:
                    result = await purge(
                        session,
                        audit_days=self.settings.audit_retention_days,
                        sessions_days=self.settings.session_retention_days,
                    )
                log.info("retention: %s", result)
            except Exception:
                log.exception("retention purge failed; will retry")
            await asyncio.sleep(RETENTION_INTERVAL)

    async def stop(self) -> None:
        if self._ingest is not None:
            await self._ingest.shutdown(self.settings.shutdown_grace)
        for task in self._tasks:
            task.cancel()  # the refusal aggregator flushes what it holds as it stops
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        if self._admin is not None:
            await self._admin.stop()

    # The live view the API reads ------------------------------------------------------

    def live_streams(self) -> dict[int, LiveStream]:
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

    def default_rtmp_url(self) -> str:
        return self.rtmp_url

    # Admin socket operations -------------------------------------------------------------

    async def _op_info(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"rtmp_url": self.rtmp_url, "http_port": self.http_port, "pid": os.getpid()}

    async def _op_streams(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            stream.as_dict() | {"channel_id": cid} for cid, stream in self.live_streams().items()
        ]

    async def _op_bus(self, request: dict[str, Any]) -> dict[str, Any]:
        await self.bus.publish(decode_event(request.get("event"), _ADMIN_SOCKET_EVENTS))
        return {"published": True}
