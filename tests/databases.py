"""Both database engines for tests: a SQLite file, and a real PostgreSQL database per run.

PostgreSQL comes from STREAM_SYNC_TEST_POSTGRES (default: the local server, user
postgres). Each test run creates its own database, migrates it once, empties it
before every test, and drops it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync.db import Base, create_engine, upgrade
from stream_sync.state.database import SEQUENCE
from tests.support import require

POSTGRES = os.environ.get(
    "STREAM_SYNC_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def blocking(function: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(function(*args))).result()


async def _admin(statement: str, server: str = POSTGRES) -> None:
    connection = await asyncpg.connect(_dsn(server), timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def fresh_postgres_database(server: str = POSTGRES) -> Iterator[str]:
    """A new, empty PostgreSQL database on `server` (a URL); its SQLAlchemy URL."""
    name = f"stream_sync_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        blocking(_admin, f'CREATE DATABASE "{name}"', server)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        require(False, f"PostgreSQL at {make_url(server).host} ({exc})")
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        blocking(_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', server)


async def migrated_postgres(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def emptied(url: str) -> AsyncEngine:
    """An engine on the run's PostgreSQL database with every table emptied."""
    engine = create_engine(url)
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await connection.execute(text(f"ALTER SEQUENCE {SEQUENCE} RESTART"))
    return engine


@contextlib.asynccontextmanager
async def disposing(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    try:
        yield engine
    finally:
        await engine.dispose()
