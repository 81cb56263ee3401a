from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from stream_sync.db import create_engine, session_factory, sqlite_url, upgrade


def test_sqlite_url_points_at_the_data_dir(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    assert url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'stream-sync.db'}"


async def test_pragmas_are_set_on_every_connection(engine: AsyncEngine) -> None:
    # Two connections at once: each must have been configured by the listener.
    async with engine.connect() as first, engine.connect() as second:
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
    await upgrade(engine)  # second run: nothing to do, nothing fails
    async with engine.connect() as conn:
        version = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).all()
        tables = (
            await conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ).scalars()
        assert version == [("0001",)]
        assert list(tables) == ["alembic_version", "channels", "stream_keys"]


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
