from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from stream_sync.db import Channel, StreamKey, User, session_factory

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
# SQLite and PostgreSQL word their refusals differently.
UNIQUE_VIOLATION = r"UNIQUE constraint failed|duplicate key value violates unique constraint"
FK_VIOLATION = r"(?i)FOREIGN KEY constraint failed|violates foreign key constraint"


def _channel(name: str = "main") -> Channel:
    return Channel(public_id=f"ch_{name}", name=name, created_at=NOW)


def _key(channel_id: int, key_id: str, revoked_at: datetime | None = None) -> StreamKey:
    return StreamKey(
        key_id=key_id,
        channel_id=channel_id,
        key_hash=b"h" * 32,
        ciphertext=b"c" * 45,
        created_at=NOW,
        revoked_at=revoked_at,
    )


async def _add_channel(session: AsyncSession, name: str = "main") -> int:
    channel = _channel(name)
    session.add(channel)
    await session.flush()
    return channel.id


async def test_second_active_key_is_rejected_by_the_database(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        channel_id = await _add_channel(session)
        session.add(_key(channel_id, "k1"))
        await session.commit()
        session.add(_key(channel_id, "k2"))
        with pytest.raises(IntegrityError, match=UNIQUE_VIOLATION):
            await session.commit()


async def test_revoked_keys_do_not_count_against_the_active_one(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        channel_id = await _add_channel(session)
        session.add_all(
            [_key(channel_id, "old1", revoked_at=NOW), _key(channel_id, "old2", revoked_at=NOW)]
        )
        session.add(_key(channel_id, "active"))
        await session.commit()
        count = await session.scalar(select(func.count()).select_from(StreamKey))
        assert count == 3


async def test_each_channel_has_its_own_active_key(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        first, second = await _add_channel(session, "a"), await _add_channel(session, "b")
        session.add_all([_key(first, "k1"), _key(second, "k2")])
        await session.commit()
        assert await session.scalar(select(func.count()).select_from(StreamKey)) == 2


async def test_deleting_a_channel_cascades_to_its_keys(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        channel_id = await _add_channel(session)
        session.add_all([_key(channel_id, "k1", revoked_at=NOW), _key(channel_id, "k2")])
        await session.commit()
        await session.execute(delete(Channel).where(Channel.id == channel_id))
        await session.commit()
        assert await session.scalar(select(func.count()).select_from(StreamKey)) == 0


async def test_keys_need_an_existing_channel(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        session.add(_key(12345, "orphan"))
        with pytest.raises(IntegrityError, match=FK_VIOLATION):
            await session.commit()


async def test_key_ids_and_channel_names_are_unique(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        channel_id = await _add_channel(session)
        session.add(_key(channel_id, "same"))
        await session.commit()
        session.add(_key(channel_id, "same", revoked_at=NOW))
        with pytest.raises(IntegrityError):
            await session.commit()
        await session.rollback()
        session.add(Channel(public_id="ch_other", name="main", created_at=NOW))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_datetimes_come_back_aware_and_in_utc(engine: AsyncEngine) -> None:
    paris = timezone(timedelta(hours=1))
    async with session_factory(engine)() as session:
        channel_id = await _add_channel(session)
        await session.execute(
            update(Channel)
            .where(Channel.id == channel_id)
            .values(created_at=datetime(2025, 3, 1, 13, 0, tzinfo=paris))
        )
        await session.commit()
    async with session_factory(engine)() as session:
        created_at = await session.scalar(select(Channel.created_at))
    assert created_at == NOW
    assert created_at is not None
    assert created_at.tzinfo is UTC


async def test_naive_datetimes_are_refused(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        session.add(Channel(public_id="ch_x", name="x", created_at=datetime(2025, 1, 1)))
        with pytest.raises(StatementError, match="naive"):
            await session.commit()


async def test_key_lookup_by_key_id_uses_an_index(engine: AsyncEngine) -> None:
    query = "SELECT key_hash FROM stream_keys WHERE key_id = 'x'"
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}")).all()
            detail = " ".join(str(row[-1]) for row in plan)
            assert "USING INDEX" in detail
            assert "SCAN" not in detail
        else:
            # An empty table is cheaper to scan; forbid that to see whether an index exists.
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            text = " ".join(row[0] for row in await conn.exec_driver_sql(f"EXPLAIN {query}"))
            assert "Index" in text
            assert "uq_stream_keys_key_id" in text
            assert "Seq Scan" not in text


async def test_a_rotated_out_key_may_sit_beside_the_current_one(engine: AsyncEngine) -> None:
    # The partial unique index counts only keys without an expiry.
    async with session_factory(engine)() as session:
        channel_id = await _add_channel(session)
        rotated = _key(channel_id, "rotated")
        rotated.expires_at = NOW
        session.add_all([rotated, _key(channel_id, "current")])
        await session.commit()
        session.add(_key(channel_id, "second-current"))
        with pytest.raises(IntegrityError, match=UNIQUE_VIOLATION):
            await session.commit()


async def test_deleting_a_user_keeps_the_channel_without_owner(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        user = User(email="a@example.com", password_hash="x", role="admin")
        session.add(user)
        await session.flush()
        session.add(Channel(public_id="ch_a", name="a", created_at=NOW, owner_id=user.id))
        await session.commit()
        await session.execute(delete(User))
        await session.commit()
        assert await session.scalar(select(Channel.owner_id)) is None
        assert await session.scalar(select(func.count()).select_from(Channel)) == 1


async def test_roles_are_checked_by_the_database(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        session.add(User(email="a@example.com", password_hash="x", role="root"))
        with pytest.raises(IntegrityError, match=r"(?i)check constraint"):
            await session.commit()
