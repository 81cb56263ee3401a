from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from stream_sync.db import (
    Base,
    create_engine,
    current_revision,
    head_revision,
    session_factory,
    sqlite_url,
    upgrade,
)


def test_sqlite_url_points_at_the_data_dir(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    assert url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'stream-sync.db'}"


def test_head_is_the_newest_revision() -> None:
    versions = Path(__file__).parents[3] / "stream_sync" / "db" / "migrations" / "versions"
    newest = max(path.name.split("_")[0] for path in versions.glob("0*.py"))
    assert head_revision() == newest


async def test_pragmas_are_set_on_every_connection(sqlite_engine: AsyncEngine) -> None:
    # Two connections at once: each must have been configured by the listener.
    async with sqlite_engine.connect() as first, sqlite_engine.connect() as second:
        for conn in (first, second):
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }
            assert pragmas == {
                "journal_mode": "wal",
                "busy_timeout": 5000,
                "foreign_keys": 1,
                "synchronous": 1,  # NORMAL
            }


async def test_upgrade_creates_the_schema_and_is_idempotent(engine: AsyncEngine) -> None:
    await upgrade(engine)  # on a migrated database: nothing to do, nothing fails
    assert await current_revision(engine) == head_revision()
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: sorted(inspect(sync).get_table_names()))
    assert tables == sorted([*Base.metadata.tables, "alembic_version"])


async def test_current_revision_of_an_empty_database(fresh_engine: AsyncEngine) -> None:
    assert await current_revision(fresh_engine) is None
    await upgrade(fresh_engine, "0001")
    assert await current_revision(fresh_engine) == "0001"


async def test_concurrent_upgrades_of_one_database_both_succeed(
    fresh_engine: AsyncEngine,
) -> None:
    # Two processes starting at once on one database: one migrates, the other
    # waits for it and then finds nothing to do.
    other = create_engine(fresh_engine.url.render_as_string(hide_password=False))
    try:
        await asyncio.gather(upgrade(fresh_engine), upgrade(other))
    finally:
        await other.dispose()
    assert await current_revision(fresh_engine) == head_revision()


async def test_upgrade_restores_foreign_keys_on_its_connection(tmp_path: Path) -> None:
    # upgrade() turns foreign keys off while it migrates; the pooled connection it
    # used must go back to the pool with them on.
    engine = create_engine(sqlite_url(tmp_path))
    try:
        await upgrade(engine)
        pool = engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedin() == 1  # so the next checkout reuses it
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_session_factory_keeps_values_after_commit(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    assert sessions.kw["expire_on_commit"] is False
    async with sessions() as session:
        await session.execute(text("SELECT 1"))
        await session.commit()
        assert not session.in_transaction()
