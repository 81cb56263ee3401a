"""Calls into a running server; None means no server is running on this data folder."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..state.codec import encode_event
from ..state.interfaces import BusEvent, StreamStats, Subscription
from . import SOCKET_NAME

MAX_REPLY = 1024 * 1024
REPLY_TIMEOUT = 10.0


class AdminError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def call(data_dir: Path, op: str, **params: Any) -> Any | None:
    path = data_dir / SOCKET_NAME
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=MAX_REPLY), REPLY_TIMEOUT
        )
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    try:
        writer.write(json.dumps({"op": op, **params}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
    finally:
        writer.close()
    if not line:
        raise AdminError("no_reply", "the running server closed the admin connection")
    reply = json.loads(line)
    if "error" in reply:
        raise AdminError(reply["error"]["code"], reply["error"]["message"])
    return reply["result"]


class AdminSocketBus:
    """The event bus as seen from a CLI process: events go to the running server, if any.

    With no server running nobody can be live, so there is nobody to tell.
    """

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    async def publish(self, event: BusEvent) -> None:
        await call(self._data_dir, "bus.publish", event=encode_event(event))

    async def publish_stats(self, batch: Sequence[StreamStats]) -> None:
        for stats in batch:
            await self.publish(stats)

    def subscribe(self, *, stats: bool = False) -> Subscription:
        raise NotImplementedError("a CLI process only publishes")
