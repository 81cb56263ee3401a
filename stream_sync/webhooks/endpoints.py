"""Registering, listing, changing and removing webhook endpoints.

Same transaction rules as ``credentials.service``: pass an idle session; each
function owns its transaction, and writers commit together with their audit row.
The signing secret is kept like a stream key: AES-GCM under the server's
encryption key (``credentials.crypto``), so it can be shown again never, used by
the sender always, and re-protected by a secret rotation (`reencrypt_secrets`).
URLs are shown to admins but never logged or echoed in errors: many carry a token.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.credentials.crypto import decrypt_any, encrypt_key
from stream_sync.credentials.errors import KeyDecryptionError
from stream_sync.credentials.keys import base62_token
from stream_sync.credentials.server_secrets import ServerSecrets
from stream_sync.db.models import WebhookEndpoint, utcnow

from .errors import EndpointNotFound, InvalidEndpoint, SecretUnreadable
from .events import ALL_EVENTS, WebhookEvent

__all__ = [
    "SECRET_PREFIX",
    "CreatedEndpoint",
    "EndpointInfo",
    "create_endpoint",
    "decrypt_secret",
    "delete_endpoint",
    "get_endpoint",
    "host_of",
    "list_endpoints",
    "new_secret",
    "redact_secrets",
    "reencrypt_secrets",
    "set_enabled",
    "validate_url",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_LENGTH = 43  # base62: about 256 bits, like stream keys
SECRET_MIN = 16  # an operator's own secret: at least this many characters
SECRET_MAX = 256
URL_MAX = 2048
DESCRIPTION_MAX = 128
_PLACEHOLDER = b""  # the ciphertext before the row has its id (the associated data)
_SECRET_IN_TEXT_RE = re.compile(r"whsec_[0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    id: int
    url: str
    description: str | None
    events: tuple[str, ...]
    enabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CreatedEndpoint:
    endpoint: EndpointInfo
    secret: str  # shown once, at creation


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` and 43 base62 characters."""
    return SECRET_PREFIX + base62_token(SECRET_LENGTH)


def redact_secrets(text: str) -> str:
    """Mask generated signing secrets in ``text``; for log filters."""
    if SECRET_PREFIX in text:
        text = _SECRET_IN_TEXT_RE.sub(f"{SECRET_PREFIX}***", text)
    return text


def validate_url(url: str) -> str:
    """An http(s) URL with a host, no user name or password, no fragment."""
    problem = f"the URL must be http:// or https:// with a host, at most {URL_MAX} characters"
    if len(url) > URL_MAX or not url.isascii() or not url.isprintable() or " " in url:
        raise InvalidEndpoint(problem)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError:
        raise InvalidEndpoint(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidEndpoint(problem)
    if parts.username is not None or parts.password is not None:
        raise InvalidEndpoint("the URL must not contain a user name or password")
    if parts.fragment or url.endswith("#"):
        raise InvalidEndpoint("the URL must not have a fragment ('#...')")
    if port == 0:
        raise InvalidEndpoint("the URL's port must not be 0")
    return url


def host_of(url: str) -> str:
    """What logs and errors may say about an endpoint URL: its host and port."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "?"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return host if port is None else f"{host}:{port}"


def _events(events: Iterable[str] | None) -> list[str]:
    if events is None:
        return [str(event) for event in ALL_EVENTS]
    chosen: list[str] = []
    for name in events:
        try:
            event = WebhookEvent(name)
        except ValueError:
            known = ", ".join(str(event) for event in ALL_EVENTS)
            raise InvalidEndpoint(f"unknown event type {name[:64]!r}; known: {known}") from None
        if str(event) not in chosen:
            chosen.append(str(event))
    if not chosen:
        raise InvalidEndpoint("an endpoint receives at least one event type")
    return chosen


def _secret(secret: str | None) -> str:
    if secret is None:
        return new_secret()
    if not SECRET_MIN <= len(secret) <= SECRET_MAX or not secret.isascii():
        raise InvalidEndpoint(f"a signing secret has {SECRET_MIN} to {SECRET_MAX} ASCII characters")
    if not secret.isprintable() or any(ch.isspace() for ch in secret):
        raise InvalidEndpoint("a signing secret has no spaces or control characters")
    return secret


def _description(description: str | None) -> str | None:
    if description is None or not description.strip():
        return None
    if len(description) > DESCRIPTION_MAX or not description.isprintable():
        raise InvalidEndpoint(f"a description has at most {DESCRIPTION_MAX} printable characters")
    return description.strip()


def _associated(endpoint_id: int) -> str:
    """The secret's associated data: a ciphertext copied to another row does not decrypt."""
    return f"webhook:{endpoint_id}"


def decrypt_secret(secrets: ServerSecrets, endpoint_id: int, blob: bytes) -> str:
    """The endpoint's signing secret, with whichever server secret generation works."""
    try:
        return decrypt_any(secrets.encryption_keys, key_id=_associated(endpoint_id), blob=blob)
    except KeyDecryptionError:
        raise SecretUnreadable(
            f"the signing secret of webhook endpoint {endpoint_id} cannot be decrypted with the "
            "server's secrets; delete the endpoint and register it again"
        ) from None


async def create_endpoint(
    session: AsyncSession,
    *,
    secrets: ServerSecrets,
    url: str,
    actor: audit.Actor,
    events: Sequence[str] | None = None,
    secret: str | None = None,
    description: str | None = None,
    enabled: bool = True,
) -> CreatedEndpoint:
    """Register an endpoint (every event type unless ``events``). Commits.

    The secret is generated unless given; it is returned here and never again.
    """
    url = validate_url(url)
    chosen = _events(events)
    secret = _secret(secret)
    description = _description(description)
    row = WebhookEndpoint(
        url=url,
        description=description,
        secret_ciphertext=_PLACEHOLDER,
        events=chosen,
        enabled=enabled,
        created_at=utcnow(),
    )
    async with session.begin():
        session.add(row)
        await session.flush()  # the id is the ciphertext's associated data
        row.secret_ciphertext = encrypt_key(
            secrets.encryption_key, key_id=_associated(row.id), key=secret
        )
        audit.add_entry(
            session,
            action=audit.AuditAction.WEBHOOK_CREATED,
            actor=actor,
            details={"endpoint_id": row.id, "host": host_of(url), "events": chosen},
        )
        info = _info(row)
    return CreatedEndpoint(info, secret)


async def list_endpoints(session: AsyncSession) -> list[EndpointInfo]:
    """Every endpoint, oldest first. Read-only."""
    async with session.begin():
        rows = (await session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id))).all()
        return [_info(row) for row in rows]


async def get_endpoint(session: AsyncSession, *, endpoint_id: int) -> EndpointInfo:
    async with session.begin():
        return _info(await _require(session, endpoint_id))


async def set_enabled(
    session: AsyncSession, *, endpoint_id: int, enabled: bool, actor: audit.Actor
) -> EndpointInfo:
    """Pause or resume an endpoint. Commits.

    A paused endpoint gets no new deliveries; its pending ones wait, and are sent
    (or given up, past their deadline) once it is resumed.
    """
    async with session.begin():
        row = await _require(session, endpoint_id)
        if row.enabled != enabled:
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id)
                .values(enabled=enabled)
                .execution_options(synchronize_session=False)
            )
            audit.add_entry(
                session,
                action=audit.AuditAction.WEBHOOK_UPDATED,
                actor=actor,
                details={"endpoint_id": endpoint_id, "enabled": enabled},
            )
        info = _info(row)
    return dataclasses.replace(info, enabled=enabled)


async def delete_endpoint(session: AsyncSession, *, endpoint_id: int, actor: audit.Actor) -> None:
    """Remove an endpoint with its delivery log (ON DELETE CASCADE). Commits."""
    async with session.begin():
        row = await _require(session, endpoint_id)
        audit.add_entry(
            session,
            action=audit.AuditAction.WEBHOOK_DELETED,
            actor=actor,
            details={"endpoint_id": endpoint_id, "host": host_of(row.url)},
        )
        await session.execute(
            delete(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .execution_options(synchronize_session=False)
        )


async def reencrypt_secrets(session: AsyncSession, *, secrets: ServerSecrets) -> int:
    """Part of step 3 of a server secret rotation: every signing secret under the
    current generation. Commits; returns how many were re-protected.

    One that no generation decrypts stops the whole run (nothing changes), like
    ``credentials.rehash_all_keys``: dropping the old generation would lose it.
    """
    count = 0
    async with session.begin():
        rows = (
            await session.execute(
                select(WebhookEndpoint.id, WebhookEndpoint.secret_ciphertext).order_by(
                    WebhookEndpoint.id
                )
            )
        ).all()
        for endpoint_id, blob in rows:
            secret = decrypt_secret(secrets, endpoint_id, blob)
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id)
                .values(
                    secret_ciphertext=encrypt_key(
                        secrets.encryption_key, key_id=_associated(endpoint_id), key=secret
                    )
                )
                .execution_options(synchronize_session=False)
            )
            count += 1
    return count


async def _require(session: AsyncSession, endpoint_id: int) -> WebhookEndpoint:
    row = await session.get(WebhookEndpoint, endpoint_id)
    if row is None:
        raise EndpointNotFound(f"there is no webhook endpoint with id {endpoint_id}")
    return row


def _info(row: WebhookEndpoint) -> EndpointInfo:
    return EndpointInfo(
        id=row.id,
        url=row.url,
        description=row.description,
        events=tuple(row.events),
        enabled=row.enabled,
        created_at=row.created_at,
    )
