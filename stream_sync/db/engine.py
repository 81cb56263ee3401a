"""Engines, sessions and schema upgrades for the credential store.

SQLite is the default (one file in the data directory); any SQLAlchemy async URL
works, so a later switch to PostgreSQL is a configuration change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

DATABASE_FILENAME = "stream-sync.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# WAL lets readers (ingest auth checks) run while the dashboard writes; busy_timeout
# waits for a writer instead of failing at once; SQLite ignores foreign keys,
# including ON DELETE CASCADE, unless told per connection; NORMAL is durable
# enough under WAL and avoids an fsync per commit.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / DATABASE_FILENAME).resolve()}"


def create_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return engine


def _set_sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Results are handed back as plain values after commit; expiring them would
    # trigger lazy loads, which async sessions cannot do implicitly.
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration built in code, so no alembic.ini has to ship."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolation treats "%" specially (URL-encoded passwords).
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` on the engine's own database."""
    config = alembic_config()
    async with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations rebuild tables (copy, DROP, rename); with foreign
            # keys on, dropping a parent table would cascade-delete its children.
            # The pragma is a no-op inside a transaction, so it is set before one.
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await conn.commit()
        try:
            async with conn.begin():
                await conn.run_sync(_run_upgrade, config, revision, sqlite)
        finally:
            if sqlite:
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()


def _run_upgrade(connection: Connection, config: Config, revision: str, sqlite: bool) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    if sqlite:
        violation = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
        if violation is not None:
            raise RuntimeError(f"migration left a dangling foreign key in table {violation[0]}")
