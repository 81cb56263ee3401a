from __future__ import annotations

import pytest
from argon2 import PasswordHasher, Type
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync.accounts import UserInfo, create_user, passwords
from stream_sync.audit import Actor
from stream_sync.db.models import AuditEntry, Role

PASSWORD = "correct horse battery"
# The module's hasher with OWASP's parameters, kept before any test swaps it.
REAL_HASHER = passwords._hasher
# Same algorithm, a fraction of a millisecond per hash: for tests that do not test hashing.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", CHEAP_HASHER)


@pytest.fixture
def real_hashing(cheap_hashing: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", REAL_HASHER)


async def make_user(
    session: AsyncSession, email: str, role: Role = Role.STREAMER, password: str = PASSWORD
) -> UserInfo:
    return await create_user(session, email=email, password=password, role=role, actor=Actor.cli())


@pytest.fixture
async def admin(session: AsyncSession) -> UserInfo:
    return await make_user(session, "admin@example.com", Role.ADMIN)


@pytest.fixture
async def streamer(session: AsyncSession) -> UserInfo:
    return await make_user(session, "streamer@example.com")


async def audit_rows(sessions: async_sessionmaker[AsyncSession]) -> list[AuditEntry]:
    async with sessions() as fresh, fresh.begin():
        return list((await fresh.scalars(select(AuditEntry).order_by(AuditEntry.id))).all())


async def audit_dump(sessions: async_sessionmaker[AsyncSession]) -> str:
    """Every column of every audit row as text, to search for leaked secrets."""
    return "\n".join(
        repr({column.name: getattr(row, column.name) for column in AuditEntry.__table__.columns})
        for row in await audit_rows(sessions)
    )
