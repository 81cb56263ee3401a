"""`stream-sync serve`: ingest, control plane and state in one process, embedded defaults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from . import operations
from .admin.server import AdminServer
from .api.app import create_app
from .credentials import service
from .credentials.errors import ChannelNotFound
from .credentials.server_secrets import ServerSecrets, load_or_create
from .db.engine import create_engine, session_factory, sqlite_url, upgrade
from .ingest.admission import KeyAdmission
from .ingest.server import IngestServer
from .settings import Settings
from .state.inprocess import InProcessBus, InProcessLocks

log = logging.getLogger("stream_sync")


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
        self.rtmp_port = 0
        self.http_port = 0
        self._ingest: IngestServer | None = None
        self._admin: AdminServer | None = None
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None

    @property
    def ingest(self) -> IngestServer:
        if self._ingest is None:
            raise RuntimeError("the node is not started")
        return self._ingest

    @property
    def rtmp_url(self) -> str:
        return self.settings.public_rtmp_url(self.rtmp_port)

    async def start(self) -> None:
        settings = self.settings
        admission = KeyAdmission(
            sessions=self.sessions,
            secrets=self.store.secrets,
            locks=self.locks,
            app=settings.rtmp_app,
        )
        self._admin = AdminServer(
            settings.data_dir,
            {
                "info": self._op_info,
                "keys.reset": self._op_reset_key,
                "streams.list": self._op_streams,
            },
        )
        await self._admin.start()
        self._ingest = IngestServer(
            config=settings.rtmp_config(),
            admission=admission,
            bus=self.bus,
            admission_timeout=settings.admission_timeout,
        )
        self.rtmp_port = await self._ingest.start(settings.host, settings.rtmp_port)
        await self._start_http()
        log.info("RTMP ingest listening on %s", self.rtmp_url)
        log.info("HTTP listening on http://%s:%d", settings.host, self.http_port)
        log.info("data folder %s", settings.data_dir)
        async with self.sessions() as session:
            if not await service.list_channels(session):
                log.info(
                    "no channels yet: stream-sync channels create NAME --data-dir %s",
                    settings.data_dir,
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
        config = uvicorn.Config(create_app(self), log_config=None, access_log=False, lifespan="off")
        self._http = _EmbeddedUvicorn(config)
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve([sock]))

    async def stop(self) -> None:
        if self._ingest is not None:
            await self._ingest.shutdown(self.settings.shutdown_grace)
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        if self._admin is not None:
            await self._admin.stop()

    # Views and admin operations -----------------------------------------------------

    def live_streams(self) -> list[dict[str, Any]]:
        now = asyncio.get_running_loop().time()
        streams = []
        for proto in self.ingest.publishers.values():
            grant = proto.grant
            if grant is None:
                continue
            started = proto.publish_started_at or now
            streams.append(
                {
                    "channel": grant.channel_name,
                    "channel_id": grant.channel_id,
                    "key_id": grant.key_id,
                    "connection": proto.id,
                    "peer": proto.peer,
                    "uptime": round(now - started, 3),
                    "codecs": dict(proto.codecs),
                    "counters": proto.conn.counters.as_dict(),
                    "bytes_in": proto.conn.bytes_received,
                }
            )
        return streams

    async def _op_info(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"rtmp_url": self.rtmp_url, "http_port": self.http_port, "pid": os.getpid()}

    async def _op_streams(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        return self.live_streams()

    async def reset_key(self, channel_name: str) -> service.KeyReset:
        """New key for a channel; publishers using the old one are stopped at once."""
        return await operations.reset_channel_key(
            sessions=self.sessions,
            secrets=self.store.secrets,
            bus=self.bus,
            channel_name=channel_name,
        )

    async def _op_reset_key(self, request: dict[str, Any]) -> dict[str, Any]:
        channel = request.get("channel")
        if not isinstance(channel, str):
            raise ChannelNotFound("no channel name given")
        result = await self.reset_key(channel)
        return {
            "channel": result.channel_name,
            "key_id": result.key_id,
            "key": result.key,
            "revoked_key_id": result.revoked_key_id,
        }
