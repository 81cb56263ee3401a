from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stream_sync.credentials import ServerSecrets
from stream_sync.db import session_factory
from tests.receiver import Receiver, receiving


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def server_secrets() -> ServerSecrets:
    return ServerSecrets(hmac_key=os.urandom(32), encryption_key=os.urandom(32))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running
