"""A channel's live status and health, pushed to its dashboard over a WebSocket.

The page gets a snapshot (status from the database, measurements and recent bitrate
from the live view), then every status change and statistics event for the channel
as the bus delivers it. Nothing here polls: a page that reconnects gets a fresh
snapshot, which is how it catches up after a network drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from ...monitor import history
from ..context import ApiContext
from ..deps import SESSION_COOKIE, connection_address, cookie_principal, find_visible_channel
from ..watch import Watch

router = APIRouter(tags=["live"])
log = logging.getLogger("stream_sync.api")

# Close codes (4000-4999 are the application's): the page stops retrying on these.
UNAUTHENTICATED = 4401
NOT_FOUND = 4404
LAGGED = 1013  # "try again later": the page reconnects and gets a fresh snapshot


@router.websocket("/api/channels/{channel_ref}/live")
async def watch_channel(websocket: WebSocket, channel_ref: str) -> None:
    context: ApiContext = websocket.app.state.context
    if not _same_origin(websocket):
        # A page on another site must not read a signed-in user's stream.
        await websocket.close(code=1008, reason="cross-origin WebSocket refused")
        return
    cookie = websocket.cookies.get(SESSION_COOKIE, "")
    address = connection_address(websocket, context)
    principal = await cookie_principal(context, cookie, address) if cookie else None
    await websocket.accept()
    if principal is None:
        await websocket.close(code=UNAUTHENTICATED, reason="sign in first")
        return
    channel = await find_visible_channel(context, principal, channel_ref)
    if channel is None:
        await websocket.close(code=NOT_FOUND, reason="no such channel")
        return
    with context.live.watchers.watch(channel.id) as watch:
        context.live.thumbnail_seen(channel.id)  # its pictures come every few seconds now
        try:
            await websocket.send_json(await snapshot(context, channel.id))
        except WebSocketDisconnect:
            return  # the page went away before its snapshot (a network drop): nothing to do
        await _forward(websocket, watch)


async def snapshot(context: ApiContext, channel_id: int) -> dict[str, Any]:
    async with context.sessions() as session:
        current, seq = await history.current_status(session, channel_id=channel_id)
    live = context.live.live_streams().get(channel_id)
    return {
        "type": "snapshot",
        "server_time": time.time(),
        "status": current.status if current else "offline",
        "seq": seq,
        "since": current.status_since if current else None,
        "grace_until": current.grace_until if current else None,
        "session_id": current.id if current else None,
        "started_at": current.started_at.timestamp() if current else None,
        "stats": live.as_dict() if live is not None and current is not None else None,
        "history": context.live.watchers.history(channel_id),
    }


async def _forward(websocket: WebSocket, watch: Watch) -> None:
    """Send the channel's events until the page goes away or falls too far behind."""

    async def send() -> None:
        while True:
            message = await watch.queue.get()
            message["server_time"] = time.time()
            await websocket.send_json(message)

    async def receive() -> None:
        # The page sends nothing; reading is how a closed page is noticed.
        with contextlib.suppress(WebSocketDisconnect):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass

    tasks = [
        asyncio.ensure_future(send()),
        asyncio.ensure_future(receive()),
        asyncio.ensure_future(watch.lagged.wait()),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if tasks[2] in done:
        log.info("dashboard for channel %d fell behind; asked to reconnect", watch.channel_id)
        with contextlib.suppress(Exception):
            await websocket.close(code=LAGGED, reason="fell behind; reconnect")
    elif tasks[0] in done and (error := tasks[0].exception()) is not None:
        log.debug("dashboard socket closed while sending: %s", error)


def _same_origin(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser (browsers always send Origin on WebSockets)
    host = websocket.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()
