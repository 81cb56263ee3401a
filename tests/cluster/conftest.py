"""The `cluster` fixture: a fresh PostgreSQL database and the shared Redis, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stream_sync.state.redis import RedisState
from tests.databases import fresh_postgres_database
from tests.support import require

from .harness import Cluster

SHARED_REDIS = "redis://127.0.0.1:6379/0"


async def redis_answers(url: str) -> bool:
    state = RedisState.connect(url, "probe")
    try:
        return await state.ping()
    finally:
        await state.close()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    require(await redis_answers(SHARED_REDIS), "Redis at 127.0.0.1:6379")
    with fresh_postgres_database() as url:
        async with Cluster(tmp_path, url, SHARED_REDIS) as running:
            yield running
