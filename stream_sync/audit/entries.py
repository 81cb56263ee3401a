"""Writing and reading audit rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import AuditEntry, utcnow


class AuditAction(StrEnum):
    CHANNEL_CREATED = "channel.created"
    CHANNEL_DELETED = "channel.deleted"
    CHANNEL_MAPPED = "channel.mapped"
    CHANNEL_SETTINGS_CHANGED = "channel.settings_changed"
    KEY_CREATED = "key.created"
    KEY_REVEALED = "key.revealed"
    KEY_RESET = "key.reset"
    KEY_ROTATED = "key.rotated"
    KEY_REVOKED = "key.revoked"
    PUBLISH_REFUSED = "publish.refused"
    STREAM_KICKED = "stream.kicked"
    NODE_DRAINED = "node.drained"
    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    LOGOUT = "logout"
    USER_CREATED = "user.created"
    USER_DISABLED = "user.disabled"
    USER_ENABLED = "user.enabled"
    USER_DELETED = "user.deleted"
    USER_ROLE_CHANGED = "user.role_changed"
    PASSWORD_CHANGED = "password.changed"
    PASSWORD_RESET_STARTED = "password.reset_started"
    PASSWORD_RESET_COMPLETED = "password.reset_completed"
    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"
    INGEST_SERVER_ADDED = "ingest_server.added"
    INGEST_SERVER_UPDATED = "ingest_server.updated"
    INGEST_SERVER_REMOVED = "ingest_server.removed"
    SECRETS_ROTATED = "secrets.rotated"
    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_UPDATED = "webhook.updated"
    WEBHOOK_DELETED = "webhook.deleted"
    WEBHOOK_REDELIVERED = "webhook.redelivered"
    PUSH_TARGET_ADDED = "push_target.added"
    PUSH_TARGET_UPDATED = "push_target.updated"
    PUSH_TARGET_DELETED = "push_target.deleted"
    RECORDING_DELETED = "recording.deleted"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a signed-in user, a CLI operator on the machine, or the system itself."""

    label: str  # the user's email, "cli" or "system"
    user_id: int | None = None
    source_address: str | None = None

    @classmethod
    def cli(cls) -> Actor:
        return cls("cli")

    @classmethod
    def system(cls) -> Actor:
        return cls("system")


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    at: datetime
    action: str
    actor: str
    actor_user_id: int | None
    channel_id: int | None
    key_id: str | None
    source_address: str | None
    count: int
    details: dict[str, Any] | None


def add_entry(
    session: AsyncSession,
    *,
    action: AuditAction,
    actor: Actor,
    channel_id: int | None = None,
    key_id: str | None = None,
    details: dict[str, Any] | None = None,
    count: int = 1,
    at: datetime | None = None,
) -> None:
    """Stage an audit row in the caller's transaction (no flush, no commit)."""
    session.add(
        AuditEntry(
            at=at or utcnow(),
            action=str(action),
            actor=actor.label[:254],
            actor_user_id=actor.user_id,
            channel_id=channel_id,
            key_id=key_id,
            source_address=actor.source_address,
            count=count,
            details=details,
        )
    )


async def list_entries(
    session: AsyncSession,
    *,
    channel_id: int | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AuditView]:
    """Newest first; page with before_id. Read-only."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(max(1, min(limit, 1000)))
    if channel_id is not None:
        query = query.where(AuditEntry.channel_id == channel_id)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    async with session.begin():
        rows = (await session.scalars(query)).all()
    return [
        AuditView(
            row.id,
            row.at,
            row.action,
            row.actor,
            row.actor_user_id,
            row.channel_id,
            row.key_id,
            row.source_address,
            row.count,
            row.details,
        )
        for row in rows
    ]
