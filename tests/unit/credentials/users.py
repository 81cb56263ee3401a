"""Users made directly in the database: these tests need owners, not the accounts service."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.db import AuditEntry, User


async def add_user(
    session: AsyncSession, email: str, role: str = "streamer", disabled_at: datetime | None = None
) -> int:
    async with session.begin():
        user = User(email=email, password_hash="$argon2id$x", role=role, disabled_at=disabled_at)
        session.add(user)
        await session.flush()
        return user.id


async def audit_rows(session: AsyncSession, action: str | None = None) -> list[audit.AuditView]:
    rows = await audit.list_entries(session, limit=1000)
    return [row for row in reversed(rows) if action is None or row.action == action]


async def audit_count(session: AsyncSession) -> int:
    async with session.begin():
        return await session.scalar(select(func.count()).select_from(AuditEntry)) or 0
