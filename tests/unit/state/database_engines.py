"""A migrated, empty database on each engine, for the state tests that need one.

This folder's conftest calls its state harness ``engine``, so the database fixture
here has a name of its own; test modules define it with ``database_fixture()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stream_sync.db import Channel, create_engine, sqlite_url, upgrade
from tests.databases import emptied


@contextlib.asynccontextmanager
async def open_database(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> AsyncIterator[tuple[AsyncEngine, str]]:
    """The engine and its URL (for tests that open a second engine on the same data)."""
    if kind == "sqlite":
        url = sqlite_url(tmp_path)
        engine = create_engine(url)
        await upgrade(engine)
    else:
        url = request.getfixturevalue("postgres_url")
        engine = await emptied(url)
    try:
        yield engine, url
    finally:
        await engine.dispose()


async def add_channel(sessions: async_sessionmaker[AsyncSession], name: str) -> int:
    """A bare channel row (no keys): the outbox and the locks only need its id."""
    async with sessions() as session, session.begin():
        await session.execute(insert(Channel).values(public_id=f"ch_{name}", name=name))
        channel_id = await session.scalar(select(Channel.id).where(Channel.name == name))
    assert channel_id is not None
    return channel_id
