"""Adding, listing, changing and removing ingest servers.

Same transaction rules as ``credentials.service``: pass an idle session; each
function owns its transaction, writers commit together with their audit row.
Error messages never echo a URL: users paste stream URLs, and those can end in a
stream key.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.db.models import Channel, IngestServer, utcnow
from stream_sync.servers.errors import InvalidServer, ServerExists, ServerNotFound

__all__ = [
    "MAX_CAPACITY",
    "InvalidServer",
    "ServerExists",
    "ServerInfo",
    "ServerNotFound",
    "add_server",
    "get_server",
    "list_servers",
    "remove_server",
    "update_server",
    "validate_capacity",
    "validate_name",
    "validate_region",
    "validate_rtmp_url",
]

NAME_MAX = 64
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
REGION_MAX = 64
REGION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
URL_MAX = 255
MAX_CAPACITY = 100_000
_MAX_ID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ServerInfo:
    id: int
    name: str
    rtmp_url: str
    region: str | None
    capacity: int  # publishers
    draining: bool  # takes no new channels
    created_at: datetime


def validate_name(name: str) -> str:
    # Not only digits: get_server takes a name or an id, and must never have to guess.
    if len(name) > NAME_MAX or not NAME_RE.fullmatch(name) or name.isdigit():
        raise InvalidServer(
            f"a server name has 1 to {NAME_MAX} characters: lowercase letters a-z, digits, "
            "'-' and '_', starts with a letter or a digit and is not only digits"
        )
    return name


def validate_rtmp_url(url: str) -> str:
    """An rtmp:// or rtmps:// URL with a host, no credentials, no stream key."""
    problem = "must look like rtmp://ingest.example.com/live (or rtmps://)"
    if len(url) > URL_MAX or not url.isascii() or not url.isprintable() or " " in url:
        raise InvalidServer(f"the RTMP URL {problem}, at most {URL_MAX} characters")
    if "ssk_" in url:
        raise InvalidServer("the RTMP URL must not contain a stream key")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError:
        raise InvalidServer(f"the RTMP URL {problem}") from None
    if parts.scheme not in ("rtmp", "rtmps") or not parts.hostname:
        raise InvalidServer(f"the RTMP URL {problem}")
    if parts.username is not None or parts.password is not None:
        raise InvalidServer("the RTMP URL must not contain a user name or password")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise InvalidServer(f"the RTMP URL {problem}, without '?' or '#'")
    if port == 0:
        raise InvalidServer(f"the RTMP URL {problem}; port 0 is not a port")
    return url.rstrip("/")


def validate_region(region: str) -> str:
    if len(region) > REGION_MAX or not REGION_RE.fullmatch(region):
        raise InvalidServer(
            f"a region has 1 to {REGION_MAX} characters: letters, digits, '.', '-' and '_'"
        )
    return region


def validate_capacity(capacity: int) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise InvalidServer("the capacity must be a whole number of publishers")
    if not 0 <= capacity <= MAX_CAPACITY:
        raise InvalidServer(f"the capacity must be between 0 and {MAX_CAPACITY} publishers")
    return capacity


async def add_server(
    session: AsyncSession,
    *,
    name: str,
    rtmp_url: str,
    region: str | None = None,
    capacity: int = 100,
    actor: audit.Actor,
) -> ServerInfo:
    """Add a server to the catalog. Commits."""
    validate_name(name)
    rtmp_url = validate_rtmp_url(rtmp_url)
    if region is not None:
        validate_region(region)
    validate_capacity(capacity)
    exists = ServerExists(f"an ingest server named {name!r} already exists")
    server = IngestServer(
        name=name,
        rtmp_url=rtmp_url,
        region=region,
        capacity=capacity,
        draining=False,
        created_at=utcnow(),
    )
    try:
        async with session.begin():
            if await session.scalar(select(IngestServer.id).where(IngestServer.name == name)):
                raise exists
            session.add(server)
            await session.flush()
            info = _info(server)
            audit.add_entry(
                session,
                action=audit.AuditAction.INGEST_SERVER_ADDED,
                actor=actor,
                details={
                    "server_id": server.id,
                    "name": name,
                    "rtmp_url": rtmp_url,
                    "region": region,
                    "capacity": capacity,
                },
            )
    except IntegrityError:
        raise exists from None  # a concurrent add of the same name won
    return info


async def list_servers(session: AsyncSession) -> list[ServerInfo]:
    """Every server, by name. Read-only."""
    async with session.begin():
        rows = (await session.execute(_SERVER_INFO.order_by(IngestServer.name))).all()
    return [_info(row) for row in rows]


async def get_server(session: AsyncSession, *, ref: str) -> ServerInfo:
    """A server by name, or by id given as digits (names are never only digits). Read-only."""
    if ref.isascii() and ref.isdigit():
        number = int(ref) if len(ref) <= 12 else None
        condition = IngestServer.id == number if number and number <= _MAX_ID else None
    else:
        condition = IngestServer.name == ref
    row = None
    if condition is not None:
        async with session.begin():
            row = (await session.execute(_SERVER_INFO.where(condition))).one_or_none()
    if row is None:
        try:
            shown = repr(validate_name(ref))
        except InvalidServer:
            shown = "with that name or id" if not ref.isdigit() else f"with id {ref[:12]}"
        raise ServerNotFound(f"there is no ingest server {shown}")
    return _info(row)


async def update_server(
    session: AsyncSession,
    *,
    server_id: int,
    actor: audit.Actor,
    rtmp_url: str | None = None,
    region: str | None = None,
    capacity: int | None = None,
    draining: bool | None = None,
) -> ServerInfo:
    """Change what is given (None keeps a field; ``region=""`` clears it). Commits.

    Audited with the fields that changed; a call that changes nothing writes nothing.
    """
    changes: dict[str, Any] = {}
    if rtmp_url is not None:
        changes["rtmp_url"] = validate_rtmp_url(rtmp_url)
    if region is not None:
        changes["region"] = validate_region(region) if region else None
    if capacity is not None:
        changes["capacity"] = validate_capacity(capacity)
    if draining is not None:
        if not isinstance(draining, bool):
            raise InvalidServer("draining is true or false")
        changes["draining"] = draining
    async with session.begin():
        current = _info(await _require(session, server_id))
        changes = {k: v for k, v in changes.items() if getattr(current, k) != v}
        if changes:
            await session.execute(
                update(IngestServer)
                .where(IngestServer.id == server_id)
                .values(**changes)
                .execution_options(synchronize_session=False)
            )
            audit.add_entry(
                session,
                action=audit.AuditAction.INGEST_SERVER_UPDATED,
                actor=actor,
                details={"server_id": server_id, "name": current.name, "changes": changes},
            )
    return dataclasses.replace(current, **changes)


async def remove_server(session: AsyncSession, *, server_id: int, actor: audit.Actor) -> None:
    """Remove a server; channels mapped to it become unmapped (SET NULL). Commits."""
    async with session.begin():
        current = _info(await _require(session, server_id))
        mapped = await session.scalar(
            select(func.count()).select_from(Channel).where(Channel.ingest_server_id == server_id)
        )
        audit.add_entry(
            session,
            action=audit.AuditAction.INGEST_SERVER_REMOVED,
            actor=actor,
            details={"server_id": server_id, "name": current.name, "unmapped_channels": mapped},
        )
        await session.execute(
            delete(IngestServer)
            .where(IngestServer.id == server_id)
            .execution_options(synchronize_session=False)
        )


_SERVER_INFO = select(
    IngestServer.id,
    IngestServer.name,
    IngestServer.rtmp_url,
    IngestServer.region,
    IngestServer.capacity,
    IngestServer.draining,
    IngestServer.created_at,
)


async def _require(session: AsyncSession, server_id: int) -> Row[*tuple[Any, ...]]:
    row = (await session.execute(_SERVER_INFO.where(IngestServer.id == server_id))).one_or_none()
    if row is None:
        raise ServerNotFound(f"there is no ingest server with id {server_id}")
    return row


def _info(server: Row[*tuple[Any, ...]] | IngestServer) -> ServerInfo:
    """From a selected row or a loaded model alike: they have the same attributes."""
    return ServerInfo(
        id=server.id,
        name=server.name,
        rtmp_url=server.rtmp_url,
        region=server.region,
        capacity=server.capacity,
        draining=server.draining,
        created_at=server.created_at,
    )
