"""A stream-sync cluster on this machine: real processes, one PostgreSQL, one Redis.

Each node is a `stream-sync` process with a data folder of its own; they share the
database, a Redis key prefix unique to the test, and server secrets passed in the
environment, as a real deployment would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from stream_sync.admin import client as admin
from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.db.models import Role
from stream_sync.node import Store, open_store
from stream_sync.operations import ControlPlane
from stream_sync.settings import Settings
from stream_sync.state.redis import RedisState
from tests.support import BusRecorder, LoggedProcess, RtmpTestClient

CLI = [sys.executable, "-m", "stream_sync"]
ADMIN_EMAIL = "ops@example.com"
ADMIN_PASSWORD = "cluster operator passphrase"


class Node:
    def __init__(self, name: str, process: LoggedProcess, data_dir: Path) -> None:
        self.name = name
        self.process = process
        self.data_dir = data_dir
        self.rtmp_url = ""
        self.http_url = ""

    @property
    def rtmp_port(self) -> int:
        return int(self.rtmp_url.rsplit(":", 1)[1].split("/")[0])

    async def stats(self) -> dict[str, Any]:
        reply = await admin.call(self.data_dir, "stats")
        assert isinstance(reply, dict)
        return reply


class WorkerServer(Node):
    """`stream-sync serve|ingest --workers N`: a supervisor and its ingest workers.

    Everything a test learns about the workers comes from the shared log: each
    worker's lines carry its node id, the supervisor's name the workers' pids.
    """

    def worker_of(self, channel: str) -> str:
        """The node id of the worker that accepted the channel's latest publish."""
        pattern = re.compile(
            rf"\[({re.escape(self.name)}-w\d+)\] stream_sync\.ingest: conn=\S+ peer=\S+ "
            rf"publish accepted channel={re.escape(channel)} "
        )
        found = [m.group(1) for line in self.process.lines if (m := pattern.search(line))]
        assert found, f"no publish accepted for {channel}"
        return found[-1]

    def pid(self, worker: str) -> int:
        """The pid of the worker's current process."""
        pattern = re.compile(rf"ingest worker {re.escape(worker)} started \(pid (\d+)\)")
        found = [m.group(1) for line in self.process.lines if (m := pattern.search(line))]
        assert found, f"no worker {worker}"
        return int(found[-1])

    def listening(self, start: int = 0) -> list[tuple[str, str]]:
        """(node id, URL) of every "RTMP ingest listening" line from line `start` on."""
        pattern = re.compile(r"\[(\S+)\] stream_sync: RTMP ingest listening on (\S+)")
        return [
            (m.group(1), m.group(2))
            for line in self.process.lines[start:]
            if (m := pattern.search(line))
        ]


class Cluster:
    def __init__(self, root: Path, database_url: str, redis_url: str, **settings: str) -> None:
        self.root = root
        self.database_url = database_url
        self.redis_url = redis_url
        self.prefix = f"test{uuid.uuid4().hex[:12]}"
        self.env = {
            **os.environ,
            "STREAM_SYNC_DATABASE_URL": database_url,
            "STREAM_SYNC_REDIS_URL": redis_url,
            "STREAM_SYNC_REDIS_PREFIX": self.prefix,
            "STREAM_SYNC_HMAC_SECRET": base64.b64encode(os.urandom(32)).decode(),
            "STREAM_SYNC_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
            "STREAM_SYNC_LOCK_TTL": "6",
            "STREAM_SYNC_HEARTBEAT_INTERVAL": "0.5",
            "STREAM_SYNC_STALE_AFTER": "3",
            "STREAM_SYNC_SHUTDOWN_GRACE": "1",
            "STREAM_SYNC_HOST": "127.0.0.1",
            "STREAM_SYNC_WORKERS": "1",  # one process per node unless a test asks for workers
            **{f"STREAM_SYNC_{key.upper()}": value for key, value in settings.items()},
        }
        self.nodes: dict[str, Node] = {}
        self.supervisors: list[WorkerServer] = []
        self.store: Store | None = None
        self._store_context: Any = None
        self.redis: RedisState | None = None
        self.bus: BusRecorder | None = None

    async def __aenter__(self) -> Cluster:
        for name in ("STREAM_SYNC_HMAC_SECRET", "STREAM_SYNC_ENCRYPTION_KEY"):
            os.environ[name] = self.env[name]  # the test process opens the store too
        settings = Settings(data_dir=self.root / "control", database_url=self.database_url)
        self._store_context = open_store(settings)
        self.store = await self._store_context.__aenter__()
        self.redis = RedisState.connect(self.redis_url, self.prefix)
        self.bus = BusRecorder(self.redis.bus)
        await self.redis.bus.ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server in self.supervisors:  # SIGTERM: their workers stop with them
            if server.process.proc.returncode is None:
                # A supervisor SIGKILLs a worker still running shutdown_grace (1 s) + 10 s
                # after its SIGTERM: wait past that, or a slow worker fails the teardown.
                await server.process.stop(timeout=15)
        for node in self.nodes.values():
            if node.process.proc.returncode is None:
                node.process.proc.kill()
                await node.process.proc.wait()
        if self.bus is not None:
            await self.bus.close()
        if self.redis is not None:
            await self.redis.close()
        if self._store_context is not None:
            await self._store_context.__aexit__(None, None, None)
        for name in ("STREAM_SYNC_HMAC_SECRET", "STREAM_SYNC_ENCRYPTION_KEY"):
            os.environ.pop(name, None)

    async def start(self, role: str, name: str, **settings: str) -> Node:
        data_dir = self.root / name
        args = [*CLI, role, "--data-dir", str(data_dir), "--server-name", name]
        if role == "ingest":
            args += ["--rtmp-port", "0"]
        if role == "api":
            args += ["--http-port", "0"]
        env = {**self.env, **{f"STREAM_SYNC_{k.upper()}": v for k, v in settings.items()}}
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        node = Node(name, LoggedProcess(proc), data_dir)
        self.nodes[name] = node
        if role == "ingest":
            node.rtmp_url = (
                await node.process.wait_for_log(r"RTMP ingest listening on (\S+)")
            ).group(1)
        elif role == "api":
            node.http_url = (await node.process.wait_for_log(r"HTTP listening on (\S+)")).group(1)
        await node.process.wait_for_log(r"roles " + re.escape(role))
        return node

    async def start_workers(
        self, command: str, name: str, workers: int = 2, *extra: str
    ) -> WorkerServer:
        """`stream-sync serve|ingest --workers N` on a free port; returns once all listen."""
        data_dir = self.root / name
        args = [*CLI, command, "--data-dir", str(data_dir), "--server-name", name]
        args += ["--rtmp-port", "0", "--workers", str(workers), *extra]
        if command == "serve":
            args += ["--http-port", "0"]
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        server = WorkerServer(name, LoggedProcess(proc), data_dir)
        self.supervisors.append(server)
        self.nodes[name] = server
        ready = await server.process.wait_for_log(rf"{workers} ingest workers share (\S+)")
        server.rtmp_url = ready.group(1)
        if command == "serve":
            listening = await server.process.wait_for_log(r"HTTP listening on (\S+)")
            server.http_url = listening.group(1)
        await server.process.wait_for_log(r"roles \S*ingest")
        return server

    @property
    def control(self) -> ControlPlane:
        assert self.store is not None
        return ControlPlane(sessions=self.store.sessions, secrets=self.store.secrets, bus=None)

    async def channel(self, name: str) -> service.CreatedChannel:
        assert self.store is not None
        async with self.store.sessions() as session:
            return await service.create_channel(
                session, secrets=self.store.secrets, name=name, actor=Actor.cli()
            )

    async def admin_client(self, api: Node) -> httpx.AsyncClient:
        await self.control.create_user(
            email=ADMIN_EMAIL, password=ADMIN_PASSWORD, role=Role.ADMIN, actor=Actor.cli()
        )
        client = httpx.AsyncClient(base_url=api.http_url)
        login = await client.post(
            "/api/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        assert login.status_code == 200, login.text
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        return client

    async def cached(self, key_id: str) -> Any:
        assert self.redis is not None
        return await self.redis.key_cache.get(key_id)

    async def try_publish(
        self, node: Node, key: str, properties: dict[str, Any] | None = None
    ) -> list[Any]:
        """Our own client's publish attempt; the events it saw (the connection is closed)."""
        client = await RtmpTestClient.open(node.rtmp_port)
        try:
            await client.connect(properties=properties)
            return await client.publish(key)
        finally:
            client.close()
