from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync.db import create_engine, sqlite_url, upgrade


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite file, as the application opens it."""
    engine = create_engine(sqlite_url(tmp_path))
    await upgrade(engine)
    yield engine
    await engine.dispose()
