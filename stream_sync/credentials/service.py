"""Channel and stream key operations, shared by the CLI, the API and the admin socket.

Transactions: each function is one unit of work and owns its transaction, so
every caller gets the same guarantees without repeating them. Pass a session
with no transaction in progress (a fresh one from ``session_factory``); writers
commit before returning, readers end their read transaction, and a failure
rolls back and leaves the session usable. Results are plain frozen values.

Every change writes its audit row(s) inside its own transaction: the change and
its record land together or not at all. So do the `KeyRevoked` events of keys that
stop being valid: they are staged in the event outbox (``state.outbox``) in the same
transaction; the caller publishes them on the bus after the commit, and consumers
that missed the bus catch up from the outbox.

Key states: a channel has at most one *current* key (no expiry, not revoked; the
database enforces it). Rotation gives the current key an expiry and issues a new
current one: until the expiry both verify, so an encoder can be switched without
a gap. A key is *active* while it is not revoked and not past its expiry.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, Row, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.credentials.crypto import decrypt_any, encrypt_key
from stream_sync.credentials.errors import (
    ChannelExists,
    ChannelNotFound,
    ConcurrentChange,
    InvalidChannelName,
    InvalidOverlap,
    KeyDecryptionError,
    NoActiveKey,
    OwnerNotFound,
)
from stream_sync.credentials.keys import (
    KEY_PREFIX,
    GeneratedKey,
    base62_token,
    generate_key,
    key_hash,
    mask_key,
    parse_key_id,
)
from stream_sync.credentials.lookup import lookup_keys
from stream_sync.credentials.server_secrets import ServerSecrets
from stream_sync.db.models import (
    CHANNEL_NAME_MAX,
    Channel,
    IngestServer,
    Role,
    StreamKey,
    User,
    utcnow,
)
from stream_sync.servers.errors import ServerNotFound
from stream_sync.state import outbox
from stream_sync.state.interfaces import KeyRevoked, StreamKeyReset

__all__ = [
    "DEFAULT_OVERLAP",
    "ChannelExists",
    "ChannelInfo",
    "ChannelNotFound",
    "ChannelSummary",
    "ConcurrentChange",
    "CreatedChannel",
    "InvalidChannelName",
    "InvalidOverlap",
    "KeyCheck",
    "KeyDecryptionError",
    "KeyReset",
    "KeyRotation",
    "NoActiveKey",
    "OwnerNotFound",
    "RefusalReason",
    "ServerNotFound",
    "assign_orphan_channels",
    "create_channel",
    "delete_channel",
    "find_channel",
    "get_channel",
    "key_hint",
    "list_channels",
    "mark_used",
    "rehash_all_keys",
    "reset_key",
    "reveal_key",
    "revoke_keys",
    "revoke_owner_keys",
    "rotate_key",
    "set_channel_server",
    "validate_channel_name",
    "verify_key",
]

CHANNEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
PUBLIC_ID_PREFIX = "ch_"
PUBLIC_ID_LENGTH = 16
DEFAULT_OVERLAP = timedelta(minutes=10)
MAX_OVERLAP = timedelta(days=7)
# A write can lose a race with another write to the same channel (the partial
# unique index refuses a second current key); trying again is always safe.
_RESET_ATTEMPTS = 3


class RefusalReason(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    id: int
    public_id: str
    name: str
    owner_id: int | None
    ingest_server_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CreatedChannel:
    channel_id: int
    public_id: str
    name: str
    key_id: str
    key: str = field(repr=False)
    owner_id: int | None = None


@dataclass(frozen=True, slots=True)
class ChannelSummary:
    channel_id: int
    public_id: str
    name: str
    created_at: datetime
    key_id: str | None  # the current key
    key_created_at: datetime | None
    owner_id: int | None = None
    ingest_server_id: int | None = None
    rotating_key_ids: tuple[str, ...] = ()  # rotated out, still valid until their expiry


@dataclass(frozen=True, slots=True)
class KeyReset:
    channel_id: int
    channel_name: str
    key_id: str
    key: str = field(repr=False)
    revoked_key_ids: tuple[str, ...] = ()  # cut publishers using these


@dataclass(frozen=True, slots=True)
class KeyRotation:
    channel_id: int
    channel_name: str
    key_id: str
    key: str = field(repr=False)
    previous_key_id: str | None = None  # keeps working until previous_expires_at
    previous_expires_at: datetime | None = None
    revoked_key_ids: tuple[str, ...] = ()  # an older key still in overlap: cut its publishers


@dataclass(frozen=True, slots=True)
class KeyCheck:
    ok: bool
    reason: RefusalReason | None
    key_id: str | None
    channel_id: int | None = None
    channel_name: str | None = None


def validate_channel_name(name: str) -> str:
    # The name is not echoed: a user may have pasted a key into the wrong field.
    if len(name) > CHANNEL_NAME_MAX or not CHANNEL_NAME_RE.fullmatch(name):
        raise InvalidChannelName(
            f"a channel name has 1 to {CHANNEL_NAME_MAX} characters: lowercase letters "
            "a-z, digits, '-' and '_', and starts with a letter or a digit"
        )
    return name


# Channels ---------------------------------------------------------------------------


async def create_channel(
    session: AsyncSession,
    *,
    secrets: ServerSecrets,
    name: str,
    actor: audit.Actor,
    owner_id: int | None = None,
    now: datetime | None = None,
) -> CreatedChannel:
    """Create a channel with its first key, in one transaction. Commits.

    Without ``owner_id`` the channel goes to the first admin (lowest id, not
    disabled), or stays without owner until one exists.
    """
    validate_channel_name(name)
    now = now or utcnow()
    generated = generate_key()
    try:
        async with session.begin():
            if await _channel_id(session, name) is not None:
                raise ChannelExists(f"a channel named {name!r} already exists")
            if owner_id is None:
                owner_id = await _first_admin_id(session)
            elif await session.scalar(select(User.id).where(User.id == owner_id)) is None:
                raise OwnerNotFound(f"there is no user with id {owner_id}")
            channel = Channel(
                public_id=PUBLIC_ID_PREFIX + base62_token(PUBLIC_ID_LENGTH),
                name=name,
                created_at=now,
                owner_id=owner_id,
            )
            session.add(channel)
            await session.flush()
            session.add(_key_row(secrets, channel.id, generated, now))
            audit.add_entry(
                session,
                action=audit.AuditAction.CHANNEL_CREATED,
                actor=actor,
                channel_id=channel.id,
                details={"name": name, "owner_id": owner_id},
                at=now,
            )
            audit.add_entry(
                session,
                action=audit.AuditAction.KEY_CREATED,
                actor=actor,
                channel_id=channel.id,
                key_id=generated.key_id,
                at=now,
            )
    except IntegrityError:
        # A concurrent create of the same name got in between the check and the insert.
        async with session.begin():
            exists = await _channel_id(session, name) is not None
        if exists:
            raise ChannelExists(f"a channel named {name!r} already exists") from None
        raise ConcurrentChange("the channel could not be created; try again") from None
    return CreatedChannel(
        channel_id=channel.id,
        public_id=channel.public_id,
        name=channel.name,
        key_id=generated.key_id,
        key=generated.key,
        owner_id=owner_id,
    )


async def find_channel(session: AsyncSession, ref: str) -> ChannelInfo:
    """A channel by public id or by name. Read-only.

    A public id wins over a name: ids are random, names are chosen, so nobody can
    capture references to another channel by naming theirs after its id.
    """
    async with session.begin():
        rows = (
            await session.execute(
                _CHANNEL_INFO.where(or_(Channel.public_id == ref, Channel.name == ref))
            )
        ).all()
    if not rows:
        raise ChannelNotFound(f"there is no channel {_shown_name(ref)}")
    by_id = [row for row in rows if row.public_id == ref]
    return _info(by_id[0] if by_id else rows[0])


async def get_channel(session: AsyncSession, channel_id: int) -> ChannelInfo:
    """A channel by its database id. Read-only."""
    async with session.begin():
        return await _require_channel(session, channel_id)


async def list_channels(
    session: AsyncSession, *, owner_id: int | None = None, now: datetime | None = None
) -> list[ChannelSummary]:
    """Channels by name, with key ids (never keys); ``owner_id`` filters. Read-only."""
    now = now or utcnow()
    query = (
        select(
            Channel.id,
            Channel.public_id,
            Channel.name,
            Channel.created_at,
            Channel.owner_id,
            Channel.ingest_server_id,
            StreamKey.key_id,
            StreamKey.created_at,
        )
        .outerjoin(StreamKey, and_(StreamKey.channel_id == Channel.id, _current()))
        .order_by(Channel.name)
    )
    rotating_query = (
        select(StreamKey.channel_id, StreamKey.key_id)
        .join(Channel, Channel.id == StreamKey.channel_id)
        .where(_rotating(now))
        .order_by(StreamKey.expires_at.desc(), StreamKey.id.desc())
    )
    if owner_id is not None:
        query = query.where(Channel.owner_id == owner_id)
        rotating_query = rotating_query.where(Channel.owner_id == owner_id)
    async with session.begin():
        rows = (await session.execute(query)).all()
        rotating: dict[int, list[str]] = {}
        for channel_id, key_id in (await session.execute(rotating_query)).all():
            rotating.setdefault(channel_id, []).append(key_id)
    return [
        ChannelSummary(
            channel_id=row[0],
            public_id=row[1],
            name=row[2],
            created_at=row[3],
            owner_id=row[4],
            ingest_server_id=row[5],
            key_id=row[6],
            key_created_at=row[7],
            rotating_key_ids=tuple(rotating.get(row[0], ())),
        )
        for row in rows
    ]


async def delete_channel(
    session: AsyncSession, *, channel_id: int, actor: audit.Actor, now: datetime | None = None
) -> list[str]:
    """Delete a channel and its keys and sessions. Commits.

    Returns the key ids that were still active, so the caller can cut publishers.
    """
    now = now or utcnow()
    async with session.begin():
        channel = await _require_channel(session, channel_id, lock=True)
        active = list(
            (
                await session.scalars(
                    select(StreamKey.key_id)
                    .where(StreamKey.channel_id == channel_id, _active(now))
                    .order_by(StreamKey.id)
                )
            ).all()
        )
        # Staged while the channel exists (it takes the channel's next seq); the
        # deletion then nulls the rows' channel_id, the payloads keep it.
        await _stage_revoked(session, ((channel_id, key_id) for key_id in active))
        # channel_id stays NULL here: the row outlives the channel, whose FK would
        # null it anyway; the details keep what identified it.
        audit.add_entry(
            session,
            action=audit.AuditAction.CHANNEL_DELETED,
            actor=actor,
            details={
                "channel_id": channel_id,
                "name": channel.name,
                "public_id": channel.public_id,
                "active_key_ids": active,
            },
            at=now,
        )
        await session.execute(
            delete(Channel)
            .where(Channel.id == channel_id)
            .execution_options(synchronize_session=False)
        )
    return active


async def set_channel_server(
    session: AsyncSession, *, channel_id: int, server_id: int | None, actor: audit.Actor
) -> ChannelInfo:
    """Map a channel to an ingest server, or unmap it with None. Commits."""
    async with session.begin():
        channel = await _require_channel(session, channel_id)
        if server_id is not None and (
            await session.scalar(select(IngestServer.id).where(IngestServer.id == server_id))
            is None
        ):
            raise ServerNotFound(f"there is no ingest server with id {server_id}")
        await session.execute(
            update(Channel)
            .where(Channel.id == channel_id)
            .values(ingest_server_id=server_id)
            .execution_options(synchronize_session=False)
        )
        audit.add_entry(
            session,
            action=audit.AuditAction.CHANNEL_MAPPED,
            actor=actor,
            channel_id=channel_id,
            details={"server_id": server_id, "previous_server_id": channel.ingest_server_id},
        )
    return dataclasses.replace(channel, ingest_server_id=server_id)


async def assign_orphan_channels(session: AsyncSession, *, owner_id: int) -> int:
    """Give every channel without an owner to this user; how many. Commits.

    Called when the first admin is created, in the same spirit as
    ``create_channel`` defaulting to the first admin; the caller audits the user.
    """
    async with session.begin():
        result = await session.execute(
            update(Channel)
            .where(Channel.owner_id.is_(None))
            .values(owner_id=owner_id)
            .execution_options(synchronize_session=False)
        )
    return _rowcount(result)


# Keys -------------------------------------------------------------------------------


async def reset_key(
    session: AsyncSession,
    *,
    secrets: ServerSecrets,
    channel_id: int,
    actor: audit.Actor,
    now: datetime | None = None,
) -> KeyReset:
    """Revoke every active key (current and rotated-out) and issue a new one. Commits."""
    for _ in range(_RESET_ATTEMPTS):
        try:
            return await _reset_once(session, secrets, channel_id, actor, now or utcnow())
        except IntegrityError:
            continue
    raise ConcurrentChange("the key was being changed at the same time; try again")


async def _reset_once(
    session: AsyncSession,
    secrets: ServerSecrets,
    channel_id: int,
    actor: audit.Actor,
    now: datetime,
) -> KeyReset:
    generated = generate_key()
    async with session.begin():
        channel = await _require_channel(session, channel_id, lock=True)
        revoked = await _revoke(session, _active(now), now, StreamKey.channel_id == channel_id)
        await _stage_revoked(session, ((channel_id, key_id) for key_id in revoked))
        await outbox.stage(
            session, StreamKeyReset(channel_id, generated.key_id, revoked_key_ids=list(revoked))
        )
        session.add(_key_row(secrets, channel_id, generated, now))
        audit.add_entry(
            session,
            action=audit.AuditAction.KEY_RESET,
            actor=actor,
            channel_id=channel_id,
            key_id=generated.key_id,
            details={"revoked_key_ids": list(revoked)},
            at=now,
        )
        await session.flush()
    return KeyReset(
        channel_id=channel_id,
        channel_name=channel.name,
        key_id=generated.key_id,
        key=generated.key,
        revoked_key_ids=revoked,
    )


async def rotate_key(
    session: AsyncSession,
    *,
    secrets: ServerSecrets,
    channel_id: int,
    actor: audit.Actor,
    overlap: timedelta = DEFAULT_OVERLAP,
    now: datetime | None = None,
) -> KeyRotation:
    """Issue a new current key; the old one keeps working for ``overlap``. Commits.

    At most one key is in overlap: rotating again during one revokes the older
    rotated-out key. Live publishers on the previous key are not cut.
    """
    if not timedelta(0) <= overlap <= MAX_OVERLAP:
        raise InvalidOverlap(f"the overlap must be between 0 and {MAX_OVERLAP.days} days")
    for _ in range(_RESET_ATTEMPTS):
        try:
            return await _rotate_once(session, secrets, channel_id, actor, overlap, now or utcnow())
        except IntegrityError:
            continue
    raise ConcurrentChange("the key was being changed at the same time; try again")


async def _rotate_once(
    session: AsyncSession,
    secrets: ServerSecrets,
    channel_id: int,
    actor: audit.Actor,
    overlap: timedelta,
    now: datetime,
) -> KeyRotation:
    generated = generate_key()
    expires_at = now + overlap
    async with session.begin():
        channel = await _require_channel(session, channel_id, lock=True)
        # First the older rotated-out key, then the current one: in the other
        # order the first update would catch the key just rotated out.
        revoked = await _revoke(session, _rotating(now), now, StreamKey.channel_id == channel_id)
        await _stage_revoked(session, ((channel_id, key_id) for key_id in revoked))
        previous_key_id = await session.scalar(
            update(StreamKey)
            .where(StreamKey.channel_id == channel_id, _current())
            .values(expires_at=expires_at)
            .returning(StreamKey.key_id)
            .execution_options(synchronize_session=False)
        )
        session.add(_key_row(secrets, channel_id, generated, now))
        audit.add_entry(
            session,
            action=audit.AuditAction.KEY_ROTATED,
            actor=actor,
            channel_id=channel_id,
            key_id=generated.key_id,
            details={
                "previous_key_id": previous_key_id,
                "previous_expires_at": expires_at.isoformat() if previous_key_id else None,
                "revoked_key_ids": list(revoked),
            },
            at=now,
        )
        await session.flush()
    return KeyRotation(
        channel_id=channel_id,
        channel_name=channel.name,
        key_id=generated.key_id,
        key=generated.key,
        previous_key_id=previous_key_id,
        previous_expires_at=expires_at if previous_key_id else None,
        revoked_key_ids=revoked,
    )


async def revoke_keys(
    session: AsyncSession, *, channel_id: int, actor: audit.Actor, now: datetime | None = None
) -> tuple[str, ...]:
    """Revoke every active key of a channel, issuing none. Commits.

    One audit row per revoked key; nothing to revoke writes nothing.
    """
    now = now or utcnow()
    async with session.begin():
        await _require_channel(session, channel_id, lock=True)
        revoked = await _revoke(session, _active(now), now, StreamKey.channel_id == channel_id)
        await _stage_revoked(session, ((channel_id, key_id) for key_id in revoked))
        for key_id in revoked:
            audit.add_entry(
                session,
                action=audit.AuditAction.KEY_REVOKED,
                actor=actor,
                channel_id=channel_id,
                key_id=key_id,
                at=now,
            )
    return revoked


async def revoke_owner_keys(
    session: AsyncSession, *, owner_id: int, actor: audit.Actor, now: datetime | None = None
) -> list[tuple[int, str]]:
    """Revoke every active key of every channel the user owns. Commits.

    For disabling or deleting a user: a deleted owner's channels lose their owner
    (SET NULL), and ownerless keys would verify again.
    """
    now = now or utcnow()
    owned = select(Channel.id).where(Channel.owner_id == owner_id).scalar_subquery()
    async with session.begin():
        # The same per-channel lock as rotations and resets, so none of them
        # slips a key past this revocation.
        await session.execute(
            select(Channel.id).where(Channel.owner_id == owner_id).with_for_update()
        )
        rows = (
            await session.execute(
                update(StreamKey)
                .where(StreamKey.channel_id.in_(owned), _active(now))
                .values(revoked_at=now)
                .returning(StreamKey.channel_id, StreamKey.key_id)
                .execution_options(synchronize_session=False)
            )
        ).all()
        pairs = sorted((channel_id, key_id) for channel_id, key_id in rows)
        await _stage_revoked(session, pairs)
        for channel_id, key_id in pairs:
            audit.add_entry(
                session,
                action=audit.AuditAction.KEY_REVOKED,
                actor=actor,
                channel_id=channel_id,
                key_id=key_id,
                details={"owner_id": owner_id},
                at=now,
            )
    return pairs


async def reveal_key(
    session: AsyncSession, *, secrets: ServerSecrets, channel_id: int, actor: audit.Actor
) -> str:
    """The channel's current key in clear, for its owner; audited, so it commits."""
    async with session.begin():
        channel = await _require_channel(session, channel_id)
        row = (
            await session.execute(
                select(StreamKey.key_id, StreamKey.ciphertext).where(
                    StreamKey.channel_id == channel_id, _current()
                )
            )
        ).one_or_none()
        if row is None:
            raise NoActiveKey(f"channel {channel.name!r} has no active key; reset it to issue one")
        # Decrypted before the audit row is committed: a failure reveals nothing
        # and records nothing.
        key = _decrypt(secrets, row.key_id, row.ciphertext)
        audit.add_entry(
            session,
            action=audit.AuditAction.KEY_REVEALED,
            actor=actor,
            channel_id=channel_id,
            key_id=row.key_id,
        )
    return key


async def key_hint(session: AsyncSession, *, secrets: ServerSecrets, channel_id: int) -> str | None:
    """The masked current key for display (``ssk_<id>_…abcd``); None without one. Read-only.

    A key that cannot be decrypted still gets a hint, without its last characters:
    a dashboard must render; ``reveal_key`` reports the failure.
    """
    async with session.begin():
        await _require_channel(session, channel_id)
        row = (
            await session.execute(
                select(StreamKey.key_id, StreamKey.ciphertext).where(
                    StreamKey.channel_id == channel_id, _current()
                )
            )
        ).one_or_none()
    if row is None:
        return None
    try:
        return mask_key(_decrypt(secrets, row.key_id, row.ciphertext))
    except KeyDecryptionError:
        return f"{KEY_PREFIX}{row.key_id}_…"


async def verify_key(
    session: AsyncSession, *, secrets: ServerSecrets, presented: str, now: datetime | None = None
) -> KeyCheck:
    """Check a presented key: one indexed lookup by key id, then constant-time compares.

    A known key id with the wrong secret is reported as ``unknown``, so probing
    cannot tell which key ids exist. Each secret generation is tried (current
    first), so keys survive a secret rotation. A key whose channel owner is
    disabled is ``revoked``. Read-only.
    """
    key_id = parse_key_id(presented)
    if key_id is None:
        return KeyCheck(ok=False, reason=RefusalReason.MALFORMED, key_id=None)
    async with session.begin():
        record = (await lookup_keys(await session.connection(), key_ids=[key_id])).get(key_id)
    if record is None or not _hash_matches(secrets, presented, record.key_hash):
        return KeyCheck(ok=False, reason=RefusalReason.UNKNOWN, key_id=key_id)
    reason = None
    if record.revoked:
        reason = RefusalReason.REVOKED
    elif record.expires_at is not None and record.expires_at <= (now or utcnow()):
        reason = RefusalReason.EXPIRED
    return KeyCheck(
        ok=reason is None,
        reason=reason,
        key_id=key_id,
        channel_id=record.channel_id,
        channel_name=record.channel_name,
    )


async def mark_used(session: AsyncSession, *, key_id: str, now: datetime | None = None) -> None:
    """Record that a key was just used to publish. Commits; unknown ids are ignored."""
    async with session.begin():
        await session.execute(
            update(StreamKey)
            .where(StreamKey.key_id == key_id)
            .values(last_used_at=now or utcnow())
            .execution_options(synchronize_session=False)
        )


async def rehash_all_keys(
    session: AsyncSession, *, secrets: ServerSecrets, actor: audit.Actor
) -> int:
    """Step 3 of a secret rotation: store every key under the current generation. Commits.

    Each key is decrypted with whichever generation works, checked against its
    stored HMAC under some generation, then hashed and encrypted afresh. Keys
    whose HMAC secret is already lost are left alone (they do not verify now and
    must not come back). If an active key cannot be decrypted, nothing changes and
    ``KeyDecryptionError`` names its key id: reset that key, then run again, or
    dropping the old generation would break it. Returns the number of keys
    re-keyed; one transaction, so it is all or nothing and safe to repeat.
    """
    now = utcnow()
    rehashed = 0
    async with session.begin():
        rows = (
            await session.execute(
                select(
                    StreamKey.id,
                    StreamKey.key_id,
                    StreamKey.key_hash,
                    StreamKey.ciphertext,
                    StreamKey.revoked_at,
                    StreamKey.expires_at,
                ).order_by(StreamKey.id)
            )
        ).all()
        stuck: list[str] = []
        for row in rows:
            try:
                key = _decrypt(secrets, row.key_id, row.ciphertext)
            except KeyDecryptionError:
                if row.revoked_at is None and (row.expires_at is None or row.expires_at > now):
                    stuck.append(row.key_id)
                continue
            if not _hash_matches(secrets, key, row.key_hash):
                continue
            await session.execute(
                update(StreamKey)
                .where(StreamKey.id == row.id)
                .values(
                    key_hash=key_hash(secrets.hmac_key, key),
                    ciphertext=encrypt_key(secrets.encryption_key, key_id=row.key_id, key=key),
                )
                .execution_options(synchronize_session=False)
            )
            rehashed += 1
        if stuck:
            raise KeyDecryptionError(
                f"{len(stuck)} active key(s) cannot be decrypted with any known secret "
                f"(key ids: {', '.join(stuck[:20])}); reset them, then run this again"
            )
        audit.add_entry(
            session,
            action=audit.AuditAction.SECRETS_ROTATED,
            actor=actor,
            details={"rehashed": rehashed, "generations": len(secrets.previous) + 1},
            at=now,
        )
    return rehashed


# Helpers ----------------------------------------------------------------------------


def _current() -> ColumnElement[bool]:
    """The key that the partial unique index allows once per channel."""
    return and_(StreamKey.revoked_at.is_(None), StreamKey.expires_at.is_(None))


def _rotating(now: datetime) -> ColumnElement[bool]:
    """Rotated out and still inside its overlap."""
    return and_(
        StreamKey.revoked_at.is_(None),
        StreamKey.expires_at.is_not(None),
        StreamKey.expires_at > now,
    )


def _active(now: datetime) -> ColumnElement[bool]:
    return and_(
        StreamKey.revoked_at.is_(None),
        or_(StreamKey.expires_at.is_(None), StreamKey.expires_at > now),
    )


async def _revoke(
    session: AsyncSession, which: ColumnElement[bool], now: datetime, *where: Any
) -> tuple[str, ...]:
    key_ids = (
        await session.scalars(
            update(StreamKey)
            .where(which, *where)
            .values(revoked_at=now)
            .returning(StreamKey.key_id)
            .execution_options(synchronize_session=False)
        )
    ).all()
    return tuple(sorted(key_ids))


async def _stage_revoked(session: AsyncSession, revoked: Iterable[tuple[int, str]]) -> None:
    """One `KeyRevoked` per (channel id, key id) into the outbox, in the open transaction."""
    for channel_id, key_id in revoked:
        await outbox.stage(session, KeyRevoked(channel_id=channel_id, key_id=key_id))


def _hash_matches(secrets: ServerSecrets, presented: str, stored: bytes) -> bool:
    # Every generation is compared even after a match: the time taken does not
    # depend on which one matched.
    matched = False
    for hmac_key in secrets.hmac_keys:
        matched |= hmac.compare_digest(stored, key_hash(hmac_key, presented))
    return matched


def _decrypt(secrets: ServerSecrets, key_id: str, blob: bytes) -> str:
    return decrypt_any(secrets.encryption_keys, key_id=key_id, blob=blob)


def _key_row(
    secrets: ServerSecrets, channel_id: int, generated: GeneratedKey, now: datetime
) -> StreamKey:
    return StreamKey(
        key_id=generated.key_id,
        channel_id=channel_id,
        key_hash=key_hash(secrets.hmac_key, generated.key),
        ciphertext=encrypt_key(secrets.encryption_key, key_id=generated.key_id, key=generated.key),
        created_at=now,
    )


# Columns, not ORM objects: a long-lived session's identity map would hand back
# stale objects that another session changed or deleted.
_CHANNEL_INFO = select(
    Channel.id,
    Channel.public_id,
    Channel.name,
    Channel.owner_id,
    Channel.ingest_server_id,
    Channel.created_at,
)


def _info(row: Row[*tuple[Any, ...]]) -> ChannelInfo:
    return ChannelInfo(
        id=row.id,
        public_id=row.public_id,
        name=row.name,
        owner_id=row.owner_id,
        ingest_server_id=row.ingest_server_id,
        created_at=row.created_at,
    )


def _rowcount(result: Any) -> int:
    count = result.rowcount if isinstance(result, CursorResult) else 0
    return max(0, int(count))


async def _first_admin_id(session: AsyncSession) -> int | None:
    return await session.scalar(
        select(User.id)
        .where(User.role == Role.ADMIN.value, User.disabled_at.is_(None))
        .order_by(User.id)
        .limit(1)
    )


async def _channel_id(session: AsyncSession, name: str) -> int | None:
    return await session.scalar(select(Channel.id).where(Channel.name == name))


async def _require_channel(
    session: AsyncSession, channel_id: int, *, lock: bool = False
) -> ChannelInfo:
    """The channel, or ChannelNotFound; ``lock`` serialises key changes of one channel.

    Under READ COMMITTED each statement sees its own snapshot: without the row
    lock, a rotation racing another could revoke nothing (old snapshot), then
    rotate the other's new key (new snapshot), leaving two keys in overlap.
    SQLite has one writer at a time and ignores FOR UPDATE.
    """
    query = _CHANNEL_INFO.where(Channel.id == channel_id)
    if lock:
        query = query.with_for_update(of=Channel)
    row = (await session.execute(query)).one_or_none()
    if row is None:
        raise ChannelNotFound(f"there is no channel with id {channel_id}")
    return _info(row)


def _shown_name(ref: str) -> str:
    try:
        return repr(validate_channel_name(ref))
    except InvalidChannelName:
        return "with that name or id"  # could be a pasted key: do not echo it
