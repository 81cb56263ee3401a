"""The dashboard's pages: server-rendered shells over the JSON API.

Lists (channels, sessions, the admin overview) are rendered here; the channel
page's key handling and live panel are JavaScript talking to the API and its
WebSocket. No page embeds a stream key: keys travel only in the API responses that
reveal or reset them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ..accounts import users
from ..api.context import ApiContext
from ..api.deps import (
    SESSION_COOKIE,
    Principal,
    connection_address,
    cookie_principal,
    find_visible_channel,
)
from ..credentials import service as credentials
from ..monitor import history
from ..state.errors import StateUnavailable
from ..state.interfaces import NodeInfo

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


def _duration(seconds: int) -> str:
    hours, rest = divmod(max(0, int(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _kbps(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


templates.env.filters["duration"] = _duration
templates.env.filters["kbps"] = _kbps

# Pages load scripts, styles and the socket from this origin only, and never in a frame:
# the Reset button must not be clickjacked.
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'{connect}; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP.format(connect=""),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


async def _principal(request: Request) -> Principal | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    context = _context(request)
    return await cookie_principal(context, cookie, connection_address(request, context))


def _render(
    request: Request,
    template: str,
    principal: Principal | None,
    status_code: int = 200,
    connect: tuple[str, ...] = (),
    **values: Any,
) -> HTMLResponse:
    values.update(user=principal.user if principal else None, principal=principal)
    response = templates.TemplateResponse(request, template, values, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    if connect:  # the page may also fetch from these origins
        response.headers["Content-Security-Policy"] = CSP.format(connect=" " + " ".join(connect))
    return response


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path
    return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)


def _not_found(request: Request, principal: Principal | None) -> HTMLResponse:
    return _render(request, "not_found.html", principal, status_code=404)


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


@router.get("/login")
async def login_page(request: Request) -> Response:
    principal = await _principal(request)
    if principal is not None:
        return RedirectResponse("/", status_code=303)
    return _render(request, "login.html", None, next=_safe_next(request))


@router.get("/")
async def my_channels(request: Request) -> Response:
    principal = await _principal(request)
    if principal is None:
        return _to_login(request)
    context = _context(request)
    async with context.sessions() as session:
        summaries = await credentials.list_channels(session, owner_id=principal.user.id)
    statuses = await _statuses(context)
    channels = [
        {"id": s.public_id, "name": s.name, "status": statuses.get(s.channel_id, "offline")}
        for s in summaries
    ]
    return _render(request, "channels.html", principal, channels=channels)


async def _visible_channel(
    request: Request, channel_ref: str
) -> tuple[Principal, credentials.ChannelInfo] | Response:
    """The signed-in user and a channel they may see, or the page that says otherwise."""
    principal = await _principal(request)
    if principal is None:
        return _to_login(request)
    channel = await find_visible_channel(_context(request), principal, channel_ref)
    if channel is None:
        return _not_found(request, principal)
    return principal, channel


@router.get("/channels/{channel_ref}")
async def channel_page(request: Request, channel_ref: str) -> Response:
    found = await _visible_channel(request, channel_ref)
    if isinstance(found, Response):
        return found
    principal, channel = found
    return _render(
        request,
        "channel.html",
        principal,
        connect=await _playback_origins(request),
        channel=channel,
    )


async def _playback_origins(request: Request) -> tuple[str, ...]:
    """Ingest nodes that serve playback from an origin of their own (workers, a cluster)."""
    context: ApiContext = request.app.state.context
    if context.nodes is None:
        return ()
    try:
        nodes = await context.nodes()
    except StateUnavailable:
        return ()
    origins = {n.playback_url for n in nodes if n.playback_url.startswith(("http://", "https://"))}
    own = f"{request.url.scheme}://{request.url.netloc}"
    # Only scheme://host:port, as the registry gives it: nothing that could end the header.
    return tuple(sorted(o for o in origins - {own} if _ORIGIN.fullmatch(o)))


@router.get("/channels/{channel_ref}/sessions")
async def sessions_page(request: Request, channel_ref: str) -> Response:
    found = await _visible_channel(request, channel_ref)
    if isinstance(found, Response):
        return found
    principal, channel = found
    async with _context(request).sessions() as session:
        rows = await history.list_sessions(session, channel_id=channel.id, limit=100)
    return _render(request, "sessions.html", principal, channel=channel, sessions=rows)


@router.get("/admin")
async def admin_page(request: Request) -> Response:
    principal = await _principal(request)
    if principal is None:
        return _to_login(request)
    if not principal.is_admin:
        return _not_found(request, principal)
    context = _context(request)
    async with context.sessions() as session:
        summaries = await credentials.list_channels(session, owner_id=None)
    async with context.sessions() as session:
        owners = {user.id: user.email for user in await users.list_users(session)}
    statuses = await _statuses(context)
    live = context.live.live_streams()
    by_id = {s.channel_id: s for s in summaries}
    streams = []
    for channel_id, stream in sorted(live.items()):
        summary = by_id.get(channel_id)
        measured = stream.measurements or {}
        video = measured.get("video") or {}
        bitrate = measured.get("bitrate_5s") or {}
        streams.append(
            {
                "channel": summary.name if summary else str(channel_id),
                "id": summary.public_id if summary else None,
                "node": stream.peer,
                "uptime": stream.uptime,
                "kbps": bitrate.get("total"),
                "resolution": _resolution(video),
                "fps": measured.get("fps"),
                "health": (stream.health or {}).get("overall", "no_data"),
            }
        )
    nodes: list[NodeInfo] = []
    if context.nodes is not None:
        nodes = sorted(await context.nodes(), key=lambda node: node.node_id)
    return _render(
        request,
        "admin.html",
        principal,
        channels=[
            {
                "id": s.public_id,
                "name": s.name,
                "owner": owners.get(s.owner_id) if s.owner_id else None,
                "status": statuses.get(s.channel_id, "offline"),
            }
            for s in summaries
        ],
        streams=streams,
        nodes=nodes,
        now=time.time(),
        refusals=sorted(context.live.refusals.items()),
    )


async def _statuses(context: ApiContext) -> dict[int, str]:
    async with context.sessions() as session:
        return {row.channel_id: row.status for row in await history.open_sessions(session)}


def _resolution(video: dict[str, Any]) -> str | None:
    width, height = video.get("width"), video.get("height")
    return f"{width}\N{MULTIPLICATION SIGN}{height}" if width and height else None


def _safe_next(request: Request) -> str:
    """Only a local path: a login link must not send the user to another site."""
    target = request.query_params.get("next", "/")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:512]
