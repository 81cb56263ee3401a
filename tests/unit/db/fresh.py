"""Databases of a test's own, for tests that create, change or drop a schema."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync.db import create_engine, sqlite_url
from tests.databases import fresh_postgres_database


@contextlib.asynccontextmanager
async def fresh_database(kind: str, folder: Path) -> AsyncIterator[AsyncEngine]:
    """An empty database of its own (never the run's shared one), with no schema."""
    if kind == "sqlite":
        folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (a test's own folder)
        engine = create_engine(sqlite_url(folder))
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    with fresh_postgres_database() as url:
        engine = create_engine(url)
        try:
            yield engine
        finally:
            await engine.dispose()
