"""Key records by key id, for caching: what the database knows, whatever was presented.

The cache must hold the database's record, not the outcome of checking one
presented key: caching "unknown" because someone sent a wrong secret with a real
key id would lock the real owner out until the entry expired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import Channel, StreamKey, User


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    key_hash: bytes = field(repr=False)
    channel_id: int
    channel_name: str
    revoked: bool  # revoked, or its owner is disabled
    expires_at: datetime | None


async def lookup_key(session: AsyncSession, *, key_id: str) -> KeyRecord | None:
    """One indexed read; None when no key has this id. Read-only."""
    query = (
        select(
            StreamKey.key_hash,
            StreamKey.revoked_at,
            StreamKey.expires_at,
            Channel.id,
            Channel.name,
            User.disabled_at,
        )
        .join(Channel, Channel.id == StreamKey.channel_id)
        .outerjoin(User, User.id == Channel.owner_id)
        .where(StreamKey.key_id == key_id)
    )
    async with session.begin():
        row = (await session.execute(query)).one_or_none()
    if row is None:
        return None
    return KeyRecord(
        key_id=key_id,
        key_hash=row.key_hash,
        channel_id=row.id,
        channel_name=row.name,
        revoked=row.revoked_at is not None or row.disabled_at is not None,
        expires_at=row.expires_at,
    )
