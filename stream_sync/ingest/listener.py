"""Listening sockets drained in batches: a storm of encoders is accepted at once.

libuv, under uvloop, accepts one connection per turn of the event loop (libuv#3696,
since 1.45). A busy ingest worker turns its loop every few milliseconds, so 200
encoders reconnecting at once waited in the kernel's accept queue, one turn each,
behind everything else the node did: 250 ms for the last of them, more than the
rest of their admission (benchmarks/results/ingest.md, storm). Here a ready listening
socket is drained in one turn, up to `BATCH` connections, as the standard library's
loop does; the transports are still uvloop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from ..background import Background
from ..state.inprocess import LogThrottle

log = logging.getLogger("stream_sync.ingest")

BATCH = 256  # connections accepted per turn of the loop, at most
BACKLOG = 1024
# Out of descriptors or memory: accepting again at once would spin; the kernel keeps
# the waiting connections meanwhile.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RESOURCE_PAUSE = 1.0


def passive_addresses(host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
    """(family, address) for every address of host, each once, as bind() takes them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return list(dict.fromkeys((int(info[0]), tuple(info[4])) for info in infos))


def bind(host: str, port: int, *, reuse_port: bool) -> list[socket.socket]:
    """Listening, non-blocking sockets on every address of host, all on one port."""
    sockets: list[socket.socket] = []
    try:
        for family, address in passive_addresses(host, port):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]  # port 0: the first address picks it
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts on its sockets and hands each connection to a new protocol."""

    def __init__(
        self,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        ssl_context: ssl.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
    ) -> None:
        self.sockets = sockets
        self._factory = protocol_factory
        self._ssl = ssl_context
        self._handshake_timeout = ssl_handshake_timeout
        self._loop = asyncio.get_running_loop()
        self._pending = Background(log)
        self._closed = False
        self._paused: asyncio.TimerHandle | None = None
        self._trouble = LogThrottle()
        self._resume()

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    def _resume(self) -> None:
        self._paused = None
        if not self._closed:
            for sock in self.sockets:
                self._loop.add_reader(sock.fileno(), self._ready, sock)

    def _pause(self) -> None:
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
        self._paused = self._loop.call_later(RESOURCE_PAUSE, self._resume)

    def _ready(self, sock: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the peer gave up while it waited in the queue
            except OSError as exc:
                self._trouble.log(log, logging.WARNING, "cannot accept connections: %s", exc)
                if exc.errno in _RESOURCE_ERRORS:
                    self._pause()
                return
            conn.setblocking(False)
            self._pending.spawn(self._start(conn), "start a connection")

    async def _start(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory,
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self._handshake_timeout if self._ssl else None,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            conn.close()  # a failed TLS handshake, or a peer already gone
            log.debug("connection not started: %r", exc)

    def close(self) -> None:
        """Stop accepting; connections already accepted go on."""
        if self._closed:
            return
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
        for sock in self.sockets:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        """Once the connections accepted before close() have started or failed."""
        await self._pending.settle()
