"""The listener drains its accept queue in one turn of a busy loop, and survives trouble."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import threading
import time

import pytest

from stream_sync.ingest import listener as listener_module
from stream_sync.ingest.listener import Listener, bind

STORM = 100


class Counted(asyncio.Protocol):
    """Notes the loop's turn at each connection_made; `all_made` is set at `want` of them."""

    made: list[int]
    turn: list[int]
    want: int
    all_made: asyncio.Event

    @classmethod
    def expect(cls, want: int) -> list[int]:
        cls.made, cls.turn, cls.want, cls.all_made = [], [0], want, asyncio.Event()
        return cls.made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(self.turn[0])
        if len(self.made) >= self.want:
            self.all_made.set()


def busy_loop(loop: asyncio.AbstractEventLoop, turn: list[int], until: threading.Event) -> None:
    """Every turn of the loop takes 5 ms, like an ingest worker in a storm."""

    def again() -> None:
        turn[0] += 1
        time.sleep(0.005)
        if not until.is_set():
            loop.call_soon(again)

    loop.call_soon(again)


def connect_all(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


async def test_a_storm_is_accepted_in_a_few_turns_of_a_busy_loop() -> None:
    loop = asyncio.get_running_loop()
    made = Counted.expect(STORM)
    turn = Counted.turn
    listener = Listener(bind("127.0.0.1", 0, reuse_port=False), Counted)
    stop = threading.Event()
    clients: list[socket.socket] = []
    try:
        busy_loop(loop, turn, stop)
        clients = await loop.run_in_executor(None, connect_all, listener.port, STORM)
        connected = turn[0]  # every connection is accepted or waiting in the queue by now
        async with asyncio.timeout(10):
            await Counted.all_made.wait()
        # One connection per turn (uvloop's own accept) would take a hundred turns.
        assert max(made) - connected <= 3, (connected, sorted(set(made)))
    finally:
        stop.set()
        listener.close()
        await listener.wait_closed()
        for client in clients:
            client.close()


class RunsOutOfDescriptors(socket.socket):
    """A real listening socket whose first accept fails as a process out of files does."""

    failed = 0

    def accept(self) -> tuple[socket.socket, object]:
        if not RunsOutOfDescriptors.failed:
            RunsOutOfDescriptors.failed += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


async def test_out_of_descriptors_pauses_accepting_then_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(listener_module, "RESOURCE_PAUSE", 0.05)
    RunsOutOfDescriptors.failed = 0
    plain = bind("127.0.0.1", 0, reuse_port=False)[0]
    sock = RunsOutOfDescriptors(plain.family, plain.type, fileno=plain.detach())
    made = Counted.expect(1)
    listener = Listener([sock], Counted)
    client = socket.create_connection(("127.0.0.1", listener.port))
    try:
        async with asyncio.timeout(10):
            await Counted.all_made.wait()
        assert made
        assert RunsOutOfDescriptors.failed == 1
        assert "cannot accept connections" in caplog.text
    finally:
        listener.close()
        await listener.wait_closed()
        client.close()


def read_until_closed(client: socket.socket) -> None:
    client.settimeout(5)
    while client.recv(1024):
        pass


async def test_a_failed_tls_handshake_closes_the_connection_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no certificate: every handshake fails
    made = Counted.expect(1)
    listener = Listener(
        bind("127.0.0.1", 0, reuse_port=False),
        Counted,
        ssl_context=context,
        ssl_handshake_timeout=1.0,
    )
    client = socket.create_connection(("127.0.0.1", listener.port))
    try:
        client.sendall(b"not a TLS client hello\r\n" * 4)
        await asyncio.get_running_loop().run_in_executor(None, read_until_closed, client)
        listener.close()
        await listener.wait_closed()
        assert not made
        assert "Traceback" not in caplog.text
    finally:
        client.close()
