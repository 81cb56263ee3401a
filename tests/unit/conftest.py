"""Fixtures most unit tests of database code share (``engine`` is in tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stream_sync.credentials import ServerSecrets
from stream_sync.db import session_factory


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
async def session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session


@pytest.fixture
def server_secrets() -> ServerSecrets:
    return ServerSecrets(hmac_key=os.urandom(32), encryption_key=os.urandom(32))
