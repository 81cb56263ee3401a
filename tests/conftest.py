from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync.db import create_engine, sqlite_url, upgrade
from tests.databases import blocking, emptied, fresh_postgres_database, migrated_postgres

# The leak scan watches the whole run (issue 9); pytester runs its self-test.
pytest_plugins = ["pytester", "tests.leakscan"]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], Any]]:
    """Tests run on uvloop, the loop `stream-sync serve` runs on."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """This run's own PostgreSQL database, migrated once."""
    with fresh_postgres_database() as url:
        blocking(migrated_postgres, url)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty database on each engine, as the application opens it."""
    if request.param == "sqlite":
        engine = create_engine(sqlite_url(tmp_path))
        await upgrade(engine)
    else:
        engine = await emptied(request.getfixturevalue("postgres_url"))
    try:
        yield engine
    finally:
        await engine.dispose()
