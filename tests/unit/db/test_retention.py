from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from stream_sync.db import AuditEntry, AuthSession, Channel, PublishSession, User, session_factory
from stream_sync.db.models import OutboxEvent
from stream_sync.db.retention import PurgeResult, purge

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


async def _populate(session: AsyncSession) -> None:
    """Rows on both sides of each retention limit (365 days audit, 90 days sessions)."""
    user = User(email="a@example.com", password_hash="x", role="admin")
    channel = Channel(public_id="ch_main", name="main", created_at=NOW - 1000 * DAY)
    session.add_all([user, channel])
    await session.flush()
    for age in (400, 366, 364, 1):
        session.add(AuditEntry(at=NOW - age * DAY, action="key.reset", actor="cli", count=1))

    def publish(started: int, ended: int | None) -> PublishSession:
        return PublishSession(
            channel_id=channel.id,
            key_id="AbCdEfGhIjKl",
            node="node-1",
            started_at=NOW - started * DAY,
            ended_at=None if ended is None else NOW - ended * DAY,
        )

    # Ended long ago (2 of them), ended recently, and one still open for 200 days.
    session.add_all([publish(120, 119), publish(95, 91), publish(95, 89), publish(200, None)])
    for expires in (-DAY, -timedelta(seconds=1), timedelta(seconds=1)):
        session.add(
            AuthSession(
                token_hash=str(expires).encode(),
                user_id=user.id,
                csrf_token="c",
                expires_at=NOW + expires,
            )
        )
    await session.commit()


async def _counts(session: AsyncSession) -> tuple[int, int, int]:
    async with session.begin():
        return (
            await session.scalar(select(func.count()).select_from(AuditEntry)) or 0,
            await session.scalar(select(func.count()).select_from(PublishSession)) or 0,
            await session.scalar(select(func.count()).select_from(AuthSession)) or 0,
        )


async def test_purge_deletes_what_is_past_retention(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        await _populate(session)
        result = await purge(session, now=NOW)
        assert result == PurgeResult(audit_entries=2, publish_sessions=2, auth_sessions=2)
        assert not session.in_transaction()
        assert await _counts(session) == (2, 2, 1)
        async with session.begin():
            open_sessions = await session.scalar(
                select(func.count())
                .select_from(PublishSession)
                .where(PublishSession.ended_at.is_(None))
            )
        assert open_sessions == 1  # a live session is never purged, however old
        # A second run finds nothing more.
        assert await purge(session, now=NOW) == PurgeResult(0, 0, 0)


async def test_zero_days_keeps_forever(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        await _populate(session)
        result = await purge(session, now=NOW, audit_days=0, sessions_days=0)
        # Expired sign-ins are not history: they always go.
        assert result == PurgeResult(audit_entries=0, publish_sessions=0, auth_sessions=2)
        assert await _counts(session) == (4, 4, 1)


async def test_custom_limits_and_small_batches(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        await _populate(session)
        result = await purge(session, now=NOW, audit_days=2, sessions_days=1, batch_size=1)
        assert result == PurgeResult(audit_entries=3, publish_sessions=3, auth_sessions=2)
        assert await _counts(session) == (1, 1, 1)


async def test_negative_days_are_refused(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        with pytest.raises(ValueError, match="keep forever"):
            await purge(session, audit_days=-1)


async def test_outbox_events_past_their_days_are_purged(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        async with session.begin():
            for age in (30, 8, 6, 0):
                session.add(
                    OutboxEvent(
                        created_at=NOW - age * DAY,
                        type="NodeLost",
                        payload={"type": "NodeLost", "node": f"n{age}"},
                    )
                )
        assert await purge(session, now=NOW, outbox_days=0) == PurgeResult(0, 0, 0, 0)
        result = await purge(session, now=NOW, batch_size=1)  # 7 days by default
        assert result == PurgeResult(0, 0, 0, outbox_events=2)
        async with session.begin():
            created = (
                await session.scalars(select(OutboxEvent.created_at).order_by(OutboxEvent.id))
            ).all()
        assert created == [NOW - 6 * DAY, NOW]
        assert await purge(session, now=NOW, outbox_days=1) == PurgeResult(0, 0, 0, 1)
        with pytest.raises(ValueError, match="keep forever"):
            await purge(session, outbox_days=-1)
