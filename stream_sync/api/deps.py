"""Request dependencies: who is asking, from where, and whether they may."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.requests import HTTPConnection

from ..accounts import api_tokens, web_sessions
from ..accounts.users import UserInfo
from ..audit import Actor
from ..credentials import service as credentials
from ..db.models import Role
from .context import ApiContext
from .errors import CsrfFailed, Forbidden, NotFound, Unauthenticated

SESSION_COOKIE = "stream_sync_session"
# Row ids in paths: bounded so that no number reaches the database driver out of range.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
CSRF_HEADER = "X-CSRF-Token"
MAX_CHANNEL_REF = 64  # channel names are at most 64 characters; public ids shorter
_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]


def client_address(request: Request, context: Context) -> str:
    return connection_address(request, context)


def connection_address(connection: HTTPConnection, context: ApiContext) -> str:
    """The socket's peer, or the X-Forwarded-For client when the peer is a trusted proxy.

    Walks X-Forwarded-For from the right, skipping trusted proxies, so a client
    cannot choose its address by sending the header itself.
    """
    peer = _peer(connection)
    trusted = _trusted(context)
    if not trusted(peer):
        return peer
    forwarded = connection.headers.get("x-forwarded-for", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage in the header: fall back to what we know
    return peer


def over_https(connection: HTTPConnection, context: ApiContext) -> bool:
    """Whether the browser spoke HTTPS: to us, or to the trusted proxy that forwarded it."""
    if connection.url.scheme in ("https", "wss"):
        return True
    if not _trusted(context)(_peer(connection)):
        return False
    forwarded = connection.headers.get("x-forwarded-proto", "")
    return forwarded.split(",")[-1].strip().lower() == "https"  # the proxy's own hop


def _peer(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client else "unknown"


def _trusted(context: ApiContext) -> Callable[[str], bool]:
    networks = [ipaddress.ip_network(n, strict=False) for n in context.settings.trusted_proxies]

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    return trusted


Address = Annotated[str, Depends(client_address)]


@dataclass(frozen=True, slots=True)
class Principal:
    user: UserInfo
    address: str
    session_token: str | None  # set for browser sessions (cookie), None for API tokens
    csrf_token: str | None

    @property
    def is_admin(self) -> bool:
        return self.user.role == Role.ADMIN

    @property
    def actor(self) -> Actor:
        return Actor(self.user.email, self.user.id, self.address)


async def current_principal(request: Request, context: Context, address: Address) -> Principal:
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("use 'Authorization: Bearer <API token>'")
        async with context.sessions() as session:
            user = await api_tokens.resolve_token(session, token=token.strip())
        if user is None:
            raise Unauthenticated("the API token is not valid")
        return Principal(user, address, None, None)  # no cookie involved: no CSRF to check
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthenticated("sign in first")
    principal = await cookie_principal(context, cookie, address)
    if principal is None:
        raise Unauthenticated("your session has ended; sign in again")
    if request.method not in _SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), (principal.csrf_token or "").encode()):
            raise CsrfFailed(f"missing or wrong {CSRF_HEADER} header")
    return principal


async def cookie_principal(context: ApiContext, cookie: str, address: str) -> Principal | None:
    """The browser session behind a cookie (pages and WebSockets use it too), or None."""
    async with context.sessions() as session:
        info = await web_sessions.resolve_session(session, token=cookie)
    if info is None:
        return None
    return Principal(info.user, address, cookie, info.csrf_token)


def may_see(principal: Principal, channel: credentials.ChannelInfo) -> bool:
    """Admins see every channel, others their own; the rest answer 404, not 403."""
    return principal.is_admin or channel.owner_id == principal.user.id


CurrentUser = Annotated[Principal, Depends(current_principal)]


async def admin_principal(principal: CurrentUser) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this needs an admin account")
    return principal


AdminUser = Annotated[Principal, Depends(admin_principal)]


async def find_visible_channel(
    context: ApiContext, principal: Principal, channel_ref: str
) -> credentials.ChannelInfo | None:
    """The channel if this user may see it (API, pages and sockets); None otherwise."""
    if len(channel_ref) > MAX_CHANNEL_REF:  # no name or public id is longer
        return None
    async with context.sessions() as session:
        try:
            channel = await credentials.find_channel(session, channel_ref)
        except credentials.ChannelNotFound:
            return None
    return channel if may_see(principal, channel) else None


async def visible_channel(
    channel_ref: str, principal: CurrentUser, context: Context
) -> credentials.ChannelInfo:
    """Someone else's channel does not exist for them: 404, like a missing one."""
    channel = await find_visible_channel(context, principal, channel_ref)
    if channel is None:
        raise NotFound("no such channel")
    return channel


VisibleChannel = Annotated[credentials.ChannelInfo, Depends(visible_channel)]
