"""Channel and stream key operations, shared by the CLI, the API and the admin socket.

Transactions: each function is one unit of work and owns its transaction, so
every caller gets the same guarantees without repeating them. Pass a session
with no transaction in progress (a fresh one from ``session_factory``); writers
commit before returning, readers end their read transaction, and a failure
rolls back and leaves the session usable. Results are plain frozen values.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync.credentials.crypto import decrypt_key, encrypt_key
from stream_sync.credentials.errors import (
    ChannelExists,
    ChannelNotFound,
    ConcurrentChange,
    InvalidChannelName,
    NoActiveKey,
)
from stream_sync.credentials.keys import (
    GeneratedKey,
    base62_token,
    generate_key,
    key_hash,
    parse_key_id,
)
from stream_sync.credentials.server_secrets import ServerSecrets
from stream_sync.db.models import CHANNEL_NAME_MAX, Channel, StreamKey, utcnow

CHANNEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
PUBLIC_ID_PREFIX = "ch_"
PUBLIC_ID_LENGTH = 16
# A reset can lose a race with another reset of the same channel (the partial
# unique index refuses a second active key); trying again is always safe.
_RESET_ATTEMPTS = 3


class RefusalReason(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class CreatedChannel:
    channel_id: int
    public_id: str
    name: str
    key_id: str
    key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ChannelSummary:
    channel_id: int
    public_id: str
    name: str
    created_at: datetime
    key_id: str | None
    key_created_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyReset:
    channel_id: int
    channel_name: str
    key_id: str
    key: str = field(repr=False)
    revoked_key_id: str | None = None


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


async def create_channel(
    session: AsyncSession, *, secrets: ServerSecrets, name: str, now: datetime | None = None
) -> CreatedChannel:
    """Create a channel with its first key, in one transaction. Commits."""
    validate_channel_name(name)
    now = now or utcnow()
    generated = generate_key()
    try:
        async with session.begin():
            if await _channel_id(session, name) is not None:
                raise ChannelExists(f"a channel named {name!r} already exists")
            channel = Channel(
                public_id=PUBLIC_ID_PREFIX + base62_token(PUBLIC_ID_LENGTH),
                name=name,
                created_at=now,
            )
            session.add(channel)
            await session.flush()
            session.add(_key_row(secrets, channel.id, generated, now))
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
    )


async def list_channels(session: AsyncSession) -> list[ChannelSummary]:
    """Every channel with its active key id (never the key), by name. Read-only."""
    query = (
        select(
            Channel.id,
            Channel.public_id,
            Channel.name,
            Channel.created_at,
            StreamKey.key_id,
            StreamKey.created_at,
        )
        .outerjoin(
            StreamKey,
            and_(StreamKey.channel_id == Channel.id, StreamKey.revoked_at.is_(None)),
        )
        .order_by(Channel.name)
    )
    async with session.begin():
        rows = (await session.execute(query)).all()
    return [
        ChannelSummary(
            channel_id=channel_id,
            public_id=public_id,
            name=name,
            created_at=created_at,
            key_id=key_id,
            key_created_at=key_created_at,
        )
        for channel_id, public_id, name, created_at, key_id, key_created_at in rows
    ]


async def reset_key(
    session: AsyncSession,
    *,
    secrets: ServerSecrets,
    channel_name: str,
    now: datetime | None = None,
) -> KeyReset:
    """Revoke the active key and issue a new one, in one transaction. Commits."""
    for _ in range(_RESET_ATTEMPTS):
        try:
            return await _reset_once(session, secrets, channel_name, now or utcnow())
        except IntegrityError:
            continue
    raise ConcurrentChange("the key was being changed at the same time; try again")


async def _reset_once(
    session: AsyncSession, secrets: ServerSecrets, channel_name: str, now: datetime
) -> KeyReset:
    generated = generate_key()
    async with session.begin():
        channel_id = await _require_channel_id(session, channel_name)
        revoked_key_id = await session.scalar(
            update(StreamKey)
            .where(StreamKey.channel_id == channel_id, StreamKey.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(StreamKey.key_id)
            .execution_options(synchronize_session=False)
        )
        session.add(_key_row(secrets, channel_id, generated, now))
        await session.flush()
    return KeyReset(
        channel_id=channel_id,
        channel_name=channel_name,
        key_id=generated.key_id,
        key=generated.key,
        revoked_key_id=revoked_key_id,
    )


async def reveal_key(session: AsyncSession, *, secrets: ServerSecrets, channel_name: str) -> str:
    """The channel's active key in clear, for its owner only. Read-only."""
    async with session.begin():
        channel_id = await _require_channel_id(session, channel_name)
        row = (
            await session.execute(
                select(StreamKey.key_id, StreamKey.ciphertext).where(
                    StreamKey.channel_id == channel_id, StreamKey.revoked_at.is_(None)
                )
            )
        ).one_or_none()
    if row is None:
        raise NoActiveKey(f"channel {channel_name!r} has no active key; reset it to issue one")
    return decrypt_key(secrets.encryption_key, key_id=row.key_id, blob=row.ciphertext)


async def verify_key(session: AsyncSession, *, secrets: ServerSecrets, presented: str) -> KeyCheck:
    """Check a presented key: one indexed lookup by key id, then a constant-time compare.

    A known key id with the wrong secret is reported as ``unknown``, so probing
    cannot tell which key ids exist. Read-only.
    """
    key_id = parse_key_id(presented)
    if key_id is None:
        return KeyCheck(ok=False, reason=RefusalReason.MALFORMED, key_id=None)
    digest = key_hash(secrets.hmac_key, presented)
    async with session.begin():
        row = (
            await session.execute(
                select(StreamKey.key_hash, StreamKey.revoked_at, Channel.id, Channel.name)
                .join(Channel, Channel.id == StreamKey.channel_id)
                .where(StreamKey.key_id == key_id)
            )
        ).one_or_none()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return KeyCheck(ok=False, reason=RefusalReason.UNKNOWN, key_id=key_id)
    if row.revoked_at is not None:
        return KeyCheck(
            ok=False,
            reason=RefusalReason.REVOKED,
            key_id=key_id,
            channel_id=row.id,
            channel_name=row.name,
        )
    return KeyCheck(ok=True, reason=None, key_id=key_id, channel_id=row.id, channel_name=row.name)


async def mark_used(session: AsyncSession, *, key_id: str, now: datetime | None = None) -> None:
    """Record that a key was just used to publish. Commits; unknown ids are ignored."""
    async with session.begin():
        await session.execute(
            update(StreamKey)
            .where(StreamKey.key_id == key_id)
            .values(last_used_at=now or utcnow())
            .execution_options(synchronize_session=False)
        )


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


async def _channel_id(session: AsyncSession, name: str) -> int | None:
    return await session.scalar(select(Channel.id).where(Channel.name == name))


async def _require_channel_id(session: AsyncSession, name: str) -> int:
    channel_id = await _channel_id(session, name)
    if channel_id is None:
        try:
            shown = repr(validate_channel_name(name))
        except InvalidChannelName:
            shown = "with that name"  # could be a pasted key: do not echo it
        raise ChannelNotFound(f"there is no channel {shown}")
    return channel_id
