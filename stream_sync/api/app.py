"""The FastAPI application, built by a factory from the running node's parts."""

from __future__ import annotations

import json
import math

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..ingest.playback_http import playback_route, recording_route
from ..web import pages
from . import errors
from .context import ApiContext
from .deps import connection_address
from .errors import error_body
from .routes import admin, auth, channels, health, push_targets, recordings, watch, webhooks


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="stream-sync",
        version=__version__,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.context = context
    errors.install(app)
    for module in (health, auth, channels, push_targets, recordings, admin, webhooks, watch, pages):
        app.include_router(module.router)
    if context.playback is not None:  # ingest runs here too: its streams play from here
        app.router.routes.append(playback_route(context.playback, context.secrets))
        folder = context.settings.recordings_path()  # and its recordings download from here
        app.router.routes.append(recording_route(folder, context.secrets))
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    app.add_middleware(BodyLimit, context=context)
    app.add_middleware(RateLimit, context=context)  # outermost: a flood is refused first
    return app


class RateLimit:
    """ASGI middleware in front of every route: 429 with Retry-After past the limit."""

    def __init__(self, app: ASGIApp, context: ApiContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        context = self.context
        wait = context.requests.take(connection_address(HTTPConnection(scope), context))
        if not wait:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # try again later
        else:
            await _too_many(send, wait)


async def _too_many(send: Send, wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    message = f"too many requests; try again in {seconds} s"
    await _error(send, 429, "rate_limited", message, (b"retry-after", str(seconds).encode()))


async def _error(
    send: Send, status: int, code: str, message: str, *headers: tuple[bytes, bytes]
) -> None:
    """An error answered before any route runs, in the API's error shape."""
    body = json.dumps(error_body(code, message), separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over the limit with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, context: ApiContext) -> None:
        self.app = app
        self.context = context
        self.limit = context.settings.max_request_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(scope, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await self._too_large(scope, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        address = connection_address(HTTPConnection(scope), self.context)
        self.context.requests.note("too_large", address, f"a body over {self.limit} bytes")
        await _too_large(send, self.limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    await _error(send, 413, "payload_too_large", f"request body over {limit} bytes")
