"""The audit log is append-only in the database itself, on both engines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from stream_sync.db import AuditEntry, Channel, User, session_factory

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def _entry(session: AsyncSession) -> tuple[int, int, int]:
    """A user, a channel and an audit row naming both; their ids."""
    user = User(email="admin@example.com", password_hash="x", role="admin")
    other = User(email="other@example.com", password_hash="x", role="streamer")
    channel = Channel(public_id="ch_main", name="main", created_at=T0)
    session.add_all([user, other, channel])
    await session.flush()
    entry = AuditEntry(
        at=T0,
        action="key.reset",
        actor="admin@example.com",
        actor_user_id=user.id,
        channel_id=channel.id,
        key_id="AbCdEfGhIjKl",
        source_address="192.0.2.1",
        count=1,
        details={"revoked_key_ids": ["x"]},
    )
    session.add(entry)
    await session.commit()
    return entry.id, user.id, channel.id


def _snapshot(row: AuditEntry) -> tuple[Any, ...]:
    return (row.at, row.action, row.actor, row.key_id, row.source_address, row.count, row.details)


@pytest.mark.parametrize(
    "values",
    [
        {"action": "key.created"},
        {"details": {"revoked_key_ids": []}},
        {"details": None},
        {"key_id": None},
        {"key_id": "ZZZZZZZZZZZZ"},
        {"count": 2},
        {"at": datetime(2030, 1, 1, tzinfo=UTC)},
        {"actor": "someone-else"},
        {"source_address": None},
        # Nulling a reference is only for the foreign key, once its row is gone.
        {"actor_user_id": None},
        {"channel_id": None},
    ],
)
async def test_updates_are_refused(engine: AsyncEngine, values: dict[str, Any]) -> None:
    async with session_factory(engine)() as session:
        entry_id, _, _ = await _entry(session)
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(
                update(AuditEntry).where(AuditEntry.id == entry_id).values(**values)
            )
        await session.rollback()
        row = await session.get(AuditEntry, entry_id, populate_existing=True)
        assert row is not None
        assert row.action == "key.reset"
        assert row.actor_user_id is not None
        assert row.channel_id is not None


async def test_pointing_at_another_user_is_refused(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        entry_id, user_id, _ = await _entry(session)
        other = await session.scalar(select(User.id).where(User.id != user_id))
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(
                update(AuditEntry).where(AuditEntry.id == entry_id).values(actor_user_id=other)
            )


async def test_deleting_a_referenced_user_and_channel_still_works(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        entry_id, user_id, channel_id = await _entry(session)
        original = await session.get(AuditEntry, entry_id)
        assert original is not None
        before = _snapshot(original)
        await session.execute(delete(User).where(User.id == user_id))
        await session.execute(delete(Channel).where(Channel.id == channel_id))
        await session.commit()
        row = await session.get(AuditEntry, entry_id, populate_existing=True)
    assert row is not None
    assert (row.actor_user_id, row.channel_id) == (None, None)  # ON DELETE SET NULL
    assert _snapshot(row) == before  # everything else kept


async def test_retention_may_delete_rows(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        entry_id, _, _ = await _entry(session)
        result = await session.execute(delete(AuditEntry).where(AuditEntry.id == entry_id))
        await session.commit()
        assert isinstance(result, CursorResult)
        assert result.rowcount == 1
        assert await session.scalar(select(func.count()).select_from(AuditEntry)) == 0
