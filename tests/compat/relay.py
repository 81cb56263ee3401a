"""A loopback TCP relay that keeps what the server said: to see what an encoder was told."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.heard = bytearray()  # everything the server sent, all connections in order
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if keep:
                    self.heard += data
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._pipe(client_reader, server_writer, keep=False),
            self._pipe(server_reader, client_writer, keep=True),
        )

    def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@contextlib.asynccontextmanager
async def relay(target_port: int) -> AsyncIterator[Relay]:
    """A relay on a free loopback port in front of ``target_port``."""
    running = Relay(target_port)
    server = await asyncio.start_server(running._track, "127.0.0.1", 0)
    running.port = server.sockets[0].getsockname()[1]
    try:
        yield running
    finally:
        server.close()
        for task in list(running._tasks):
            task.cancel()
        await asyncio.gather(*running._tasks, return_exceptions=True)
        await server.wait_closed()
