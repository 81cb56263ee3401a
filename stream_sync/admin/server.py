"""The server side of the admin socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..errors import DomainError
from . import SOCKET_NAME

log = logging.getLogger("stream_sync.admin")
MAX_REQUEST = 64 * 1024
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class AlreadyRunningError(Exception):
    pass


class AdminServer:
    def __init__(self, data_dir: Path, handlers: dict[str, Handler]) -> None:
        self.path = data_dir / SOCKET_NAME
        self._handlers = handlers
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        if self.path.exists():
            try:
                _, writer = await asyncio.open_unix_connection(str(self.path))
            except (ConnectionRefusedError, FileNotFoundError):
                self.path.unlink(missing_ok=True)  # left behind by a server that died
            else:
                writer.close()
                raise AlreadyRunningError(
                    f"another stream-sync server is already running with {self.path.parent}"
                )
        old_umask = os.umask(0o177)  # the socket is born 0600: no window for others
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old_umask)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._reply(reader)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _reply(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            request = json.loads(line)
        except (ValueError, asyncio.LimitOverrunError, TimeoutError):
            return _error("bad_request", "the request is not one JSON line")
        if not isinstance(request, dict) or request.get("op") not in self._handlers:
            return _error("unknown_op", "unknown admin operation")
        op = request.pop("op")
        try:
            return {"result": await self._handlers[op](request)}
        except DomainError as exc:
            return _error(exc.code, str(exc))
        except Exception:
            log.exception("admin operation %s failed", op)
            return _error("internal", f"the server failed to run {op}; see its log")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
