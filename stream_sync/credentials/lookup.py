"""Key records by key id, for caching: what the database knows, whatever was presented.

The cache must hold the database's record, not the outcome of checking one
presented key: caching "unknown" because someone sent a wrong secret with a real
key id would lock the real owner out until the entry expired.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.members import one_of
from ..db.models import Channel, StreamKey, User


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    key_hash: bytes = field(repr=False)
    channel_id: int
    channel_name: str
    revoked: bool  # revoked, or its owner is disabled
    expires_at: datetime | None


_RECORDS = (
    select(
        StreamKey.key_id,
        StreamKey.key_hash,
        StreamKey.revoked_at,
        StreamKey.expires_at,
        Channel.id,
        Channel.name,
        User.disabled_at,
    )
    .join(Channel, Channel.id == StreamKey.channel_id)
    .outerjoin(User, User.id == Channel.owner_id)
)


async def lookup_keys(
    connection: AsyncConnection, *, key_ids: Collection[str]
) -> dict[str, KeyRecord]:
    """The records of those key ids that exist, in one indexed read. Read-only."""
    postgresql = connection.dialect.name == "postgresql"
    wanted = one_of(StreamKey.key_id, key_ids, postgresql=postgresql)
    rows = (await connection.execute(_RECORDS.where(wanted))).all()
    return {
        row.key_id: KeyRecord(
            key_id=row.key_id,
            key_hash=row.key_hash,
            channel_id=row.id,
            channel_name=row.name,
            revoked=row.revoked_at is not None or row.disabled_at is not None,
            expires_at=row.expires_at,
        )
        for row in rows
    }
