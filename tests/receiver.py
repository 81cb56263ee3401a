"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 that records what arrives.

uvicorn on a socket bound to port 0, in the test's event loop. Tests decide how it
answers (`fail_first`, `status`, `hold`) and await deliveries with `wait_for`
instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn

from stream_sync.webhooks import signing


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]  # lowercase names
    body: bytes
    at: float
    answered: int  # the status the receiver answered with

    @property
    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = orjson.loads(self.body)
        return document

    @property
    def event_id(self) -> str:
        return self.headers["stream-sync-event-id"]

    def verified(self, secret: str, now: float | None = None) -> bool:
        """Whether the signature holds; ``now``: the sender's clock, if a test injected one."""
        header = self.headers.get("stream-sync-signature", "")
        try:
            signing.verify(secret, self.body, header, now=time.time() if now is None else now)
        except signing.InvalidSignature:
            return False
        return True


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class Receiver:
    """Records every request; answers ``status``, or 500 to the first ``fail_first``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self.fail_first = 0
        self.fail_when: Callable[[dict[str, Any]], bool] = lambda _: False
        self.hold: asyncio.Event | None = None  # set: requests wait until it is set
        self.port = 0
        self._changed = asyncio.Condition()
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def delivered(self) -> list[Received]:
        """What was answered 2xx."""
        return [r for r in self.received if 200 <= r.answered < 300]

    async def wait_for(
        self, condition: Callable[[list[Received]], bool], timeout: float = 20
    ) -> list[Received]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: condition(self.received))
        return list(self.received)

    async def wait_count(self, count: int, timeout: float = 20) -> list[Received]:
        return await self.wait_for(lambda received: len(received) >= count, timeout)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if self.hold is not None:
            await self.hold.wait()
        status = self.status
        if self.fail_first > 0:
            self.fail_first -= 1
            status = 500
        elif body.startswith(b"{") and self.fail_when(orjson.loads(body)):
            status = 500
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        async with self._changed:
            self.received.append(Received(scope["path"], headers, body, time.time(), status))
            self._changed.notify_all()

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self, log_config=None, access_log=False, lifespan="off")
        self._server = _Uvicorn(config)
        # The socket listens already: connections queue until uvicorn takes them.
        self._task = asyncio.get_running_loop().create_task(self._server.serve([sock]))

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
