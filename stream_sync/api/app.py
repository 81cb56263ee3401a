"""The FastAPI application, built by a factory from the running node's parts."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .. import __version__


class NodeView(Protocol):
    """What the API needs from the node; keeps the app testable on its own."""

    sessions: async_sessionmaker[AsyncSession]

    def live_streams(self) -> list[dict[str, Any]]: ...


def create_app(node: NodeView) -> FastAPI:
    app = FastAPI(title="stream-sync", version=__version__, docs_url="/api/docs")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            async with node.sessions() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:
            return JSONResponse(
                {"status": "unavailable", "database": type(exc).__name__}, status_code=503
            )
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/api/v1/streams")
    async def streams() -> list[dict[str, Any]]:
        return node.live_streams()

    return app
