"""Engines, sessions and schema migrations for the control plane's database.

SQLite (aiosqlite) is the embedded default, one file in the data directory;
PostgreSQL (asyncpg) is the production engine. The engine is chosen by URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ..state.inprocess import LogThrottle
from . import members

log = logging.getLogger("stream_sync")

DATABASE_FILENAME = "stream-sync.db"
_PRAGMA_ATTEMPTS = 5
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# busy_timeout waits for a writer instead of failing at once; it comes first, because
# switching a new database to WAL needs a lock that another process may hold. WAL
# lets readers (ingest auth checks) run while the dashboard writes; SQLite ignores
# foreign keys, including ON DELETE CASCADE, unless told per connection; NORMAL is
# durable enough under WAL and avoids an fsync per commit.
SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


# What a database out of reach raises while connecting, before SQLAlchemy has a
# connection to wrap errors for: the socket's own errors, and asyncpg's class 08
# (connection exception) and class 57 (operator intervention: shutting down, starting up).
CONNECTING_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
)
# Every failure of a database call, for code that goes on without the database.
DATABASE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, *CONNECTING_ERRORS)


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` is the database being out of reach (down, restarting), not a bug.

    SQLAlchemy wraps asyncpg errors it has no class for in a plain DBAPIError, "the
    database system is starting up" (57P03) among them: the asyncpg error it was
    raised from decides.
    """
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, InterfaceError | OperationalError):
            return True
        return isinstance(exc.orig.__cause__ if exc.orig else None, CONNECTING_ERRORS)
    return isinstance(exc, CONNECTING_ERRORS)


class OutageLog:
    """How a background loop reports a failed round, so that an outage does not flood the log.

    The database out of reach is a warning once a minute, with a count of the rounds
    since; anything else is a bug, logged with its traceback every time.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self._outage = LogThrottle(60.0)

    def failed(self, exc: BaseException) -> None:
        if unreachable(exc):
            self._outage.log(
                self._logger,
                logging.WARNING,
                "%s: the database is unreachable (%s)",
                self._what,
                type(exc).__name__,
            )
        else:
            self._logger.error("%s failed; will retry", self._what, exc_info=exc)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / DATABASE_FILENAME).resolve()}"


# PostgreSQL connections per process. SQLAlchemy's default (5, and 10 more opened and
# closed as needed) churns under a storm of admissions: each new connection costs a
# TLS handshake and a login. Recordings of sessions queue for a few of them
# (ingest/recorder.py), so admissions always find one.
PG_POOL_SIZE = 10
PG_POOL_OVERFLOW = 10


async def warm_pool(engine: AsyncEngine, connections: int) -> None:
    """Open ``connections`` pooled connections now, before the node takes traffic.

    The storm that follows a restart (every encoder reconnecting) would otherwise pay
    for each connection's TLS handshake and login inside its first admissions. SQLite
    connections cost nothing to open; a failure here only means they open later.
    """
    if engine.dialect.name == "sqlite":
        return
    connections = min(connections, PG_POOL_SIZE)
    try:
        async with contextlib.AsyncExitStack() as stack:
            opened = await asyncio.gather(
                *(stack.enter_async_context(engine.connect()) for _ in range(connections))
            )
            await asyncio.gather(*(members.introduce_types(c) for c in opened))
    except DATABASE_ERRORS as exc:
        log.warning("could not open database connections ahead (%s)", type(exc).__name__)


def create_engine(url: str) -> AsyncEngine:
    pool: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # LIFO: the same few connections serve a quiet node, so each prepares its
        # statements once, and the rest stay warm for a storm.
        pool = {"pool_size": PG_POOL_SIZE, "max_overflow": PG_POOL_OVERFLOW, "pool_use_lifo": True}
    engine = create_async_engine(url, **pool)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return engine


def _set_sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            for attempt in range(_PRAGMA_ATTEMPTS):
                try:
                    cursor.execute(pragma)
                    break
                except sqlite3.OperationalError as exc:
                    # Two processes opening a new database both switch it to WAL;
                    # SQLite may refuse one at once, without waiting, to avoid a
                    # deadlock. The next attempt waits (busy_timeout) and then finds
                    # WAL already set.
                    if "locked" not in str(exc) or attempt == _PRAGMA_ATTEMPTS - 1:
                        raise
    finally:
        cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Results are handed back as plain values after commit; expiring them would
    # trigger lazy loads, which async sessions cannot do implicitly.
    return async_sessionmaker(engine, expire_on_commit=False)


@contextlib.asynccontextmanager
async def autocommit(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncConnection]:
    """A connection for single statements: no BEGIN and COMMIT round trips, no ORM.

    For the reads and atomic writes on the admission path, where the session's
    bookkeeping would cost more than the statement.
    """
    async with sessions() as session:
        yield await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration built in code, so no alembic.ini has to ship."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolation treats "%" specially (URL-encoded passwords).
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


# Any fixed number: every stream-sync process migrating the same PostgreSQL
# database takes this advisory lock, so two starting nodes migrate one at a time.
_MIGRATION_LOCK = 0x5354_5359_4E43


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` on the engine's own database, in one transaction."""
    await _migrate(engine, command.upgrade, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Take the schema back to ``revision`` (data in dropped columns and tables is lost)."""
    await _migrate(engine, command.downgrade, revision)


def head_revision() -> str:
    """The newest migration this code ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's schema revision; None for an empty database."""
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


async def _migrate(engine: AsyncEngine, step: Callable[[Config, str], None], revision: str) -> None:
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
                # Two processes starting at once must not both find the database
                # unmigrated: the first takes the lock, the second waits and then
                # finds nothing left to do.
                if sqlite:
                    # The driver has not begun a transaction yet (it does so lazily,
                    # before the first write); take the write lock before reading.
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                elif conn.dialect.name == "postgresql":
                    await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
                await conn.run_sync(_run, config, step, revision, sqlite)
        finally:
            if sqlite:
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()


def _run(
    connection: Connection,
    config: Config,
    step: Callable[[Config, str], None],
    revision: str,
    sqlite: bool,
) -> None:
    config.attributes["connection"] = connection
    step(config, revision)
    if sqlite:
        violation = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
        if violation is not None:
            raise RuntimeError(f"migration left a dangling foreign key in table {violation[0]}")
