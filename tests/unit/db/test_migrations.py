"""The hand-written migrations and the models must describe the same schema."""

from __future__ import annotations

import io
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, String
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable

from stream_sync.db import Base, alembic_config, sqlite_url
from stream_sync.db.models import NAMING_CONVENTION


def _normalise(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip().rstrip(";").strip()


def _dialect(name: str) -> Dialect:
    return make_url(f"{name}://").get_dialect()()


def _diff(connection: Connection, metadata: MetaData) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_diff, Base.metadata) == []


async def test_the_drift_check_does_notice_a_difference(engine: AsyncEngine) -> None:
    # Guards the guard: a model change without a migration must show up.
    changed = MetaData(naming_convention=NAMING_CONVENTION)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["channels"].c.name.type = String(80)
    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff, changed)
    assert [op[0][0] for op in diff] == ["modify_type"]


async def test_indexes_match_the_models_including_partial_where(engine: AsyncEngine) -> None:
    # compare_metadata ignores an index's WHERE clause, so compare the DDL itself.
    async with engine.connect() as conn:
        rows = (
            await conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        ).all()
    in_database = {row.name: _normalise(row.sql) for row in rows}
    in_models = {
        index.name: _normalise(str(CreateIndex(index).compile(dialect=_dialect("sqlite"))))
        for table in Base.metadata.sorted_tables
        for index in table.indexes
    }
    assert in_database == in_models
    assert in_database["uq_stream_keys_channel_id_active"].endswith("WHERE revoked_at IS NULL")


def test_postgresql_migration_matches_the_models() -> None:
    # The engine is chosen by URL; the migration must produce on PostgreSQL exactly
    # what the models would (time zones, partial index, cascade), with no SQLite SQL.
    output = io.StringIO()
    config = alembic_config("postgresql://user@localhost/stream_sync")
    config.output_buffer = output
    command.upgrade(config, "head", sql=True)
    script = _normalise(output.getvalue())
    dialect = _dialect("postgresql")
    for table in Base.metadata.sorted_tables:
        assert _normalise(str(CreateTable(table).compile(dialect=dialect))) in script
        for index in table.indexes:
            assert _normalise(str(CreateIndex(index).compile(dialect=dialect))) in script
    assert "batch" not in script.lower()
    assert "_alembic_tmp" not in script


async def test_downgrade_removes_the_schema(engine: AsyncEngine) -> None:
    def downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    async with engine.begin() as conn:
        await conn.run_sync(downgrade)
    async with engine.connect() as conn:
        tables = (
            await conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
        ).scalars()
        assert list(tables) == ["alembic_version"]


def test_alembic_run_by_hand_builds_its_own_engine(tmp_path: Path) -> None:
    # Developers run Alembic without the application: env.py must then open the
    # database from sqlalchemy.url (with the same pragmas) and migrate it.
    command.upgrade(alembic_config(sqlite_url(tmp_path)), "head")
    with closing(sqlite3.connect(tmp_path / "stream-sync.db")) as db:
        version = db.execute("SELECT version_num FROM alembic_version").fetchall()
        journal = db.execute("PRAGMA journal_mode").fetchone()
    assert version == [("0001",)]
    assert journal == ("wal",)
