"""The RTMP listener: accepts connections, sweeps timeouts, stops publishers on demand.

Timeouts are checked by one sweep over all connections twice a second instead of
a timer per connection: at thousands of connections that is far less churn, and
the core tells each connection's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from ..rtmp.config import RtmpConfig
from ..rtmp.errors import ProtocolError
from ..state.interfaces import EventBus, KeyRevoked
from .admission import Admission
from .protocol import RtmpProtocol
from .recorder import Recorder

log = logging.getLogger("stream_sync.ingest")
SWEEP_INTERVAL = 0.5


class IngestServer:
    def __init__(
        self,
        *,
        config: RtmpConfig,
        admission: Admission,
        bus: EventBus,
        recorder: Recorder | None = None,
        admission_timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.admission = admission
        self.bus = bus
        self.recorder = recorder
        self.admission_timeout = admission_timeout
        self.connections: set[RtmpProtocol] = set()
        self.publishers: dict[str, RtmpProtocol] = {}
        self.loop = asyncio.get_running_loop()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # short jobs: lease releases, bus events
        self._daemons: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()  # set whenever no connection is open
        self._idle.set()

    async def start(self, host: str, port: int) -> int:
        self._server = await self.loop.create_server(
            lambda: RtmpProtocol(self), host, port, reuse_address=True, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._daemons = [
            self.loop.create_task(self._sweep()),
            self.loop.create_task(self._watch_bus()),
        ]
        return self.port

    def opened(self, proto: RtmpProtocol) -> None:
        self.connections.add(proto)
        self._idle.clear()

    def closed(self, proto: RtmpProtocol) -> None:
        self.connections.discard(proto)
        self.publishers.pop(proto.id, None)
        if not self.connections:
            self._idle.set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run background work that must not be garbage-collected half way."""
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %r", task.exception())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = self.loop.time()
            for proto in list(self.connections):
                conn = proto.conn
                if conn is None:
                    continue
                if proto.linger_until is not None:
                    if now >= proto.linger_until and proto.transport is not None:
                        proto.transport.abort()
                    continue
                if now >= conn.deadline():
                    try:
                        conn.handle_timer(now)
                    except ProtocolError as exc:
                        proto.abort(str(exc))

    async def _watch_bus(self) -> None:
        subscription = self.bus.subscribe()
        try:
            async for event in subscription:
                if isinstance(event, KeyRevoked):
                    self.stop_key(event.key_id, "Stream key was reset.", "key revoked")
        finally:
            subscription.close()

    def stop_key(self, key_id: str, description: str, reason: str) -> int:
        stopped = 0
        for proto in list(self.publishers.values()):
            if proto.grant is not None and proto.grant.key_id == key_id:
                proto.stop_publish(description, reason)
                stopped += 1
        return stopped

    async def shutdown(self, grace: float) -> None:
        """Stop listening, tell publishers, and give connections `grace` seconds to close."""
        if self._server is not None:
            self._server.close()
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
        for daemon in self._daemons:
            daemon.cancel()
        await asyncio.gather(*self._daemons, *self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
