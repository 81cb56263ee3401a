from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.unit.db.fresh import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """An empty, unmigrated database on each engine, for tests that change the schema."""
    async with fresh_database(request.param, tmp_path / "fresh") as engine:
        yield engine


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An unmigrated SQLite file, as the application opens it."""
    async with fresh_database("sqlite", tmp_path / "sqlite") as engine:
        yield engine
