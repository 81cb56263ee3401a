"""Liveness, readiness, and the live streams of this node."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import select, text

from ...credentials import service as credentials
from ...db.models import Channel, PublishSession
from ..deps import Context, CurrentUser
from ..metrics import ClusterState, render

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (it answers)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(context: Context) -> JSONResponse:
    """200 while the database answers; the body names what is degraded.

    A Redis outage is "degraded", not "unavailable": ingest falls back to the
    database, so one Redis blip must not take every node out of rotation.
    """
    body: dict[str, str] = {"status": "ok", "database": "ok"}
    if context.dependencies is not None:
        body.update(await context.dependencies())
    if any(value not in ("ok", "not configured") for key, value in body.items() if key != "status"):
        body["status"] = "degraded"
    try:
        async with context.sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        body.update(status="unavailable", database=f"unreachable ({type(exc).__name__})")
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(context: Context) -> PlainTextResponse:
    """Prometheus metrics: per channel by public id (never by key), refusals, nodes."""
    async with context.sessions() as session, session.begin():
        rows = (
            await session.execute(
                select(Channel.id, Channel.public_id, PublishSession.status).outerjoin(
                    PublishSession,
                    (PublishSession.channel_id == Channel.id) & PublishSession.ended_at.is_(None),
                )
            )
        ).all()
    channels = {row[0]: (row[1], row[2] or "offline") for row in rows}
    nodes = await context.nodes() if context.nodes is not None else []
    state = ClusterState(
        channels=channels,
        live=context.live.live_streams(),
        nodes=nodes,
        refusals=dict(context.live.refusals),
        http_refused=dict(context.requests.refused),
    )
    return PlainTextResponse(render(state), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/streams", tags=["channels"])
async def live_streams(principal: CurrentUser, context: Context) -> list[dict[str, Any]]:
    """Live publishers on this node (all for admins, your own channels otherwise)."""
    live = context.live.live_streams()
    if principal.is_admin:
        visible = set(live)
    else:
        async with context.sessions() as session:
            own = await credentials.list_channels(session, owner_id=principal.user.id)
        visible = {summary.channel_id for summary in own} & set(live)
    return [{"channel_id": channel_id, **live[channel_id].as_dict()} for channel_id in visible]
