"""A channel's own push targets: adding, listing, changing and removing them.

Same transaction rules as ``credentials.service``: pass an idle session; each
function owns its transaction, and writers commit together with their audit row.
A platform's stream key is a secret like ours: AES-GCM under the server's
encryption key with ``push:<id>`` as associated data, decrypted only by the ingest
node that pushes, shown to people only as its last characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.credentials.crypto import decrypt_any, encrypt_key
from stream_sync.credentials.errors import KeyDecryptionError
from stream_sync.credentials.server_secrets import ServerSecrets
from stream_sync.db.models import PushTarget as PushTargetRow
from stream_sync.db.models import utcnow

from .destinations import InvalidTarget, PushTarget, check_key, check_server_url
from .errors import InvalidPushTarget, PushKeyUnreadable, PushTargetNotFound, TooManyPushTargets

__all__ = [
    "MAX_PER_CHANNEL",
    "TargetInfo",
    "create_target",
    "decrypt_target",
    "delete_target",
    "list_targets",
    "reencrypt_keys",
    "update_target",
]

MAX_PER_CHANNEL = 8  # each is a full copy of the stream going out
NAME_MAX = 64
HINT_FROM = 12  # keys shorter than this show no characters at all
HINT_CHARS = 4
_PLACEHOLDER = b""  # the ciphertext before the row has its id (the associated data)


@dataclass(frozen=True, slots=True)
class TargetInfo:
    id: int
    channel_id: int
    name: str
    url: str
    key_hint: str  # the key's last characters, or "" for a short key
    enabled: bool
    created_at: datetime
    updated_at: datetime


def _name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise InvalidPushTarget(f"a push target's name has 1 to {NAME_MAX} printable characters")
    return name


def _url(url: str) -> str:
    try:
        return check_server_url(url)
    except InvalidTarget as exc:
        raise InvalidPushTarget(str(exc)) from None


def _key(key: str) -> str:
    try:
        return check_key(key)
    except InvalidTarget as exc:
        raise InvalidPushTarget(str(exc)) from None


def _hint(key: str) -> str:
    return key[-HINT_CHARS:] if len(key) >= HINT_FROM else ""


def _associated(target_id: int) -> str:
    """A ciphertext copied to another row does not decrypt."""
    return f"push:{target_id}"


def decrypt_target(secrets: ServerSecrets, row: PushTargetRow) -> PushTarget:
    """The target as the relay dials it, key included; PushKeyUnreadable if it is lost."""
    try:
        key = decrypt_any(
            secrets.encryption_keys, key_id=_associated(row.id), blob=row.key_ciphertext
        )
    except KeyDecryptionError:
        raise PushKeyUnreadable(
            f"the stream key of push target {row.id} cannot be decrypted with the server's "
            "secrets; enter the key again"
        ) from None
    return PushTarget.server(row.url, key, target_id=row.id, name=row.name)


async def create_target(
    session: AsyncSession,
    *,
    secrets: ServerSecrets,
    channel_id: int,
    name: str,
    url: str,
    key: str,
    actor: audit.Actor,
    enabled: bool = True,
) -> TargetInfo:
    """Add a target to a channel (at most MAX_PER_CHANNEL). Commits."""
    name, url, key = _name(name), _url(url), _key(key)
    async with session.begin():
        count = await session.scalar(
            select(func.count())
            .select_from(PushTargetRow)
            .where(PushTargetRow.channel_id == channel_id)
        )
        if (count or 0) >= MAX_PER_CHANNEL:
            raise TooManyPushTargets(f"a channel has at most {MAX_PER_CHANNEL} push targets")
        now = utcnow()
        row = PushTargetRow(
            channel_id=channel_id,
            name=name,
            url=url,
            key_ciphertext=_PLACEHOLDER,
            key_hint=_hint(key),
            enabled=enabled,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        await session.flush()  # the id is the ciphertext's associated data
        row.key_ciphertext = encrypt_key(
            secrets.encryption_key, key_id=_associated(row.id), key=key
        )
        audit.add_entry(
            session,
            action=audit.AuditAction.PUSH_TARGET_ADDED,
            actor=actor,
            channel_id=channel_id,
            details={"target_id": row.id, "name": name, "where": _where(url)},
        )
        return _info(row)


async def list_targets(session: AsyncSession, *, channel_id: int) -> list[TargetInfo]:
    """The channel's targets, oldest first. Read-only."""
    async with session.begin():
        rows = await session.scalars(
            select(PushTargetRow)
            .where(PushTargetRow.channel_id == channel_id)
            .order_by(PushTargetRow.id)
        )
        return [_info(row) for row in rows]


async def update_target(
    session: AsyncSession,
    *,
    secrets: ServerSecrets,
    channel_id: int,
    target_id: int,
    actor: audit.Actor,
    name: str | None = None,
    url: str | None = None,
    key: str | None = None,
    enabled: bool | None = None,
) -> TargetInfo:
    """Change what is given, keep the rest. Commits; the audit row names the fields, not values."""
    values: dict[str, object] = {}
    if name is not None:
        values["name"] = _name(name)
    if url is not None:
        values["url"] = _url(url)
    if key is not None:
        key = _key(key)
        values["key_ciphertext"] = encrypt_key(
            secrets.encryption_key, key_id=_associated(target_id), key=key
        )
        values["key_hint"] = _hint(key)
    if enabled is not None:
        values["enabled"] = enabled
    async with session.begin():
        row = await _require(session, channel_id, target_id)
        if values:
            values["updated_at"] = utcnow()
            await session.execute(
                update(PushTargetRow)
                .where(PushTargetRow.id == target_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            changed = sorted(
                "key" if field == "key_ciphertext" else field
                for field in values
                if field not in ("updated_at", "key_hint")
            )
            details: dict[str, object] = {"target_id": target_id, "changed": changed}
            if enabled is not None:
                details["enabled"] = enabled
            audit.add_entry(
                session,
                action=audit.AuditAction.PUSH_TARGET_UPDATED,
                actor=actor,
                channel_id=channel_id,
                details=details,
            )
            await session.refresh(row)
        return _info(row)


async def delete_target(
    session: AsyncSession, *, channel_id: int, target_id: int, actor: audit.Actor
) -> None:
    """Remove a target. Commits."""
    async with session.begin():
        row = await _require(session, channel_id, target_id)
        audit.add_entry(
            session,
            action=audit.AuditAction.PUSH_TARGET_DELETED,
            actor=actor,
            channel_id=channel_id,
            details={"target_id": target_id, "name": row.name, "where": _where(row.url)},
        )
        await session.execute(
            delete(PushTargetRow)
            .where(PushTargetRow.id == target_id)
            .execution_options(synchronize_session=False)
        )


async def reencrypt_keys(session: AsyncSession, *, secrets: ServerSecrets) -> int:
    """Part of a server secret rotation: every push key under the current generation.

    Commits; returns how many. One that no generation decrypts stops the run
    (nothing changes): dropping the old generation would lose it.
    """
    count = 0
    async with session.begin():
        rows = (await session.scalars(select(PushTargetRow).order_by(PushTargetRow.id))).all()
        for row in rows:
            target = decrypt_target(secrets, row)
            await session.execute(
                update(PushTargetRow)
                .where(PushTargetRow.id == row.id)
                .values(
                    key_ciphertext=encrypt_key(
                        secrets.encryption_key, key_id=_associated(row.id), key=target.stream
                    )
                )
                .execution_options(synchronize_session=False)
            )
            count += 1
    return count


def _where(url: str) -> str:
    return PushTarget.server(url, "k").where


async def _require(session: AsyncSession, channel_id: int, target_id: int) -> PushTargetRow:
    row = await session.get(PushTargetRow, target_id)
    if row is None or row.channel_id != channel_id:
        raise PushTargetNotFound(f"this channel has no push target with id {target_id}")
    return row


def _info(row: PushTargetRow) -> TargetInfo:
    return TargetInfo(
        id=row.id,
        channel_id=row.channel_id,
        name=row.name,
        url=row.url,
        key_hint=row.key_hint,
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
