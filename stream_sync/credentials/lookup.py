"""Key records by key id, for caching: what the database knows, whatever was presented.

The cache must hold the database's record, not the outcome of checking one
presented key: caching "unknown" because someone sent a wrong secret with a real
key id would lock the real owner out until the entry expired.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from ..db import driver
from ..db.engine import autocommit
from ..db.members import member_of, one_of
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


# asyncpg hands timestamptz back aware and in UTC, as UTCDateTime does: the rows of
# both paths are the same values.
_RECORDS_PG = driver.Statement(
    _RECORDS.where(member_of(StreamKey.key_id.expression, "key_ids", postgresql=True))
)


async def lookup_keys(
    connection: AsyncConnection, *, key_ids: Collection[str]
) -> dict[str, KeyRecord]:
    """The records of those key ids that exist, in one indexed read. Read-only."""
    postgresql = connection.dialect.name == "postgresql"
    wanted = one_of(StreamKey.key_id, key_ids, postgresql=postgresql)
    rows = (await connection.execute(_RECORDS.where(wanted))).all()
    return _records(row._mapping for row in rows)


async def read_keys(
    sessions: async_sessionmaker[AsyncSession], *, key_ids: Collection[str]
) -> dict[str, KeyRecord]:
    """`lookup_keys` on a connection of its own: the admission path's read, through
    asyncpg itself on PostgreSQL (db/driver.py)."""
    engine = sessions.kw["bind"]
    if engine.dialect.name == "postgresql":
        return _records(await driver.fetch(engine, _RECORDS_PG, {"key_ids": list(key_ids)}))
    async with autocommit(sessions) as connection:
        return await lookup_keys(connection, key_ids=key_ids)


def _records(rows: Iterable[Mapping[Any, Any]]) -> dict[str, KeyRecord]:
    return {
        row["key_id"]: KeyRecord(
            key_id=row["key_id"],
            key_hash=row["key_hash"],
            channel_id=row["id"],
            channel_name=row["name"],
            revoked=row["revoked_at"] is not None or row["disabled_at"] is not None,
            expires_at=row["expires_at"],
        )
        for row in rows
    }
