"""The hand-written migrations and the models must describe the same schema, on both engines.

Every test here changes a schema, so each one works in a database of its own
(``fresh_engine``), never in the run's shared PostgreSQL database.
"""

from __future__ import annotations

import io
import re
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, String
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync import audit
from stream_sync.credentials import (
    RefusalReason,
    ServerSecrets,
    create_channel,
    encrypt_key,
    generate_key,
    key_hash,
    list_channels,
    reveal_key,
    rotate_key,
    verify_key,
)
from stream_sync.db import (
    Base,
    UTCDateTime,
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    session_factory,
    sqlite_url,
    upgrade,
)
from stream_sync.db.models import NAMING_CONVENTION
from tests.unit.db.fresh import fresh_database

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _normalise(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip().rstrip(";").strip()


def _diff(connection: Connection, metadata: MetaData) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _check_constraints(table_sql: str) -> set[str]:
    """``CONSTRAINT name CHECK (...)`` clauses of a SQLite CREATE TABLE, parentheses balanced."""
    found = set()
    for match in re.finditer(r"CONSTRAINT (\w+) CHECK \(", table_sql):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(table_sql[end], 0)
            end += 1
        found.add(_normalise(table_sql[match.start() : end]))
    return found


def _sqlite_schema(connection: Connection) -> dict[str, Any]:
    """Everything SQLite knows about the schema except the (reformatted) table text."""
    tables = [
        row[0]
        for row in connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT IN ('alembic_version', 'sqlite_sequence') ORDER BY name"
        )
    ]
    schema: dict[str, Any] = {}
    for table in tables:
        table_sql = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).scalar_one()
        schema[table] = {
            # (name, type, notnull, default, pk); cid is the column order, which
            # ALTER TABLE ADD COLUMN cannot choose.
            "columns": {
                tuple(row[1:]) for row in connection.exec_driver_sql(f"PRAGMA table_info({table})")
            },
            "foreign_keys": {
                tuple(row[2:])
                for row in connection.exec_driver_sql(f"PRAGMA foreign_key_list({table})")
            },
            "checks": _check_constraints(table_sql),
            "indexes": {
                row[0]: _normalise(row[1])
                for row in connection.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name = ? AND sql IS NOT NULL",
                    (table,),
                )
            },
            "unique": {
                (row[1], row[2], row[3])
                for row in connection.exec_driver_sql(f"PRAGMA index_list({table})")
            },
        }
    return schema


_PG_SCHEMA_QUERIES = {
    "columns": (
        "SELECT table_name, column_name, data_type, is_nullable, column_default, "
        "character_maximum_length FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name <> 'alembic_version'"
    ),
    "constraints": (
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> "
        "'alembic_version'"
    ),
    "indexes": (
        "SELECT tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
    ),
}


def _postgres_schema(connection: Connection) -> dict[str, Any]:
    return {
        name: {tuple(row) for row in connection.exec_driver_sql(query)}
        for name, query in _PG_SCHEMA_QUERIES.items()
    }


def _schema(connection: Connection) -> dict[str, Any]:
    if connection.dialect.name == "sqlite":
        return _sqlite_schema(connection)
    return _postgres_schema(connection)


def _triggers(connection: Connection) -> dict[str, str]:
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        )
    else:
        rows = connection.exec_driver_sql(
            "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"
        )
    return {row[0]: _normalise(row[1]) for row in rows}


async def test_upgrade_from_empty_matches_the_models(
    fresh_engine: AsyncEngine, tmp_path: Path
) -> None:
    await upgrade(fresh_engine)
    assert await current_revision(fresh_engine) == head_revision()
    async with fresh_engine.connect() as conn:
        assert await conn.run_sync(_diff, Base.metadata) == []
        migrated = await conn.run_sync(_schema)
        triggers = await conn.run_sync(_triggers)
    # compare_metadata ignores partial-index WHERE clauses, CHECK constraints and
    # ON DELETE actions: compare with what the models create, in a second database.
    async with fresh_database(fresh_engine.dialect.name, tmp_path / "models") as models:
        async with models.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with models.connect() as conn:
            from_models = await conn.run_sync(_schema)
    assert migrated == from_models
    # The append-only trigger exists only in the migrations; it must be there.
    assert list(triggers) == ["audit_log_append_only"]
    assert "BEFORE UPDATE ON" in triggers["audit_log_append_only"]
    assert "audit_log" in triggers["audit_log_append_only"]


async def test_the_partial_index_keeps_its_where_clause(fresh_engine: AsyncEngine) -> None:
    await upgrade(fresh_engine)
    async with fresh_engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            sql = await conn.scalar(
                sa.text(
                    "SELECT sql FROM sqlite_master WHERE name = 'uq_stream_keys_channel_id_current'"
                )
            )
            assert _normalise(sql).endswith("WHERE revoked_at IS NULL AND expires_at IS NULL")
        else:
            sql = await conn.scalar(
                sa.text(
                    "SELECT indexdef FROM pg_indexes "
                    "WHERE indexname = 'uq_stream_keys_channel_id_current'"
                )
            )
            assert sql.endswith("WHERE ((revoked_at IS NULL) AND (expires_at IS NULL))")
        assert sql.startswith("CREATE UNIQUE INDEX")


async def test_the_drift_check_does_notice_a_difference(fresh_engine: AsyncEngine) -> None:
    # Guards the guard: a model change without a migration must show up.
    await upgrade(fresh_engine)
    changed = MetaData(naming_convention=NAMING_CONVENTION)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["channels"].c.name.type = String(80)
    async with fresh_engine.connect() as conn:
        diff = await conn.run_sync(_diff, changed)
    assert [op[0][0] for op in diff] == ["modify_type"]


async def test_downgrade_to_0001_and_up_again(
    fresh_engine: AsyncEngine, server_secrets: ServerSecrets
) -> None:
    await upgrade(fresh_engine)
    sessions = session_factory(fresh_engine)
    async with sessions() as session:
        created = await create_channel(
            session, secrets=server_secrets, name="main", actor=audit.Actor.cli()
        )
        # A rotated-out key in its overlap: 0001 allows one unrevoked key per channel.
        rotated = await rotate_key(
            session,
            secrets=server_secrets,
            channel_id=created.channel_id,
            actor=audit.Actor.cli(),
            now=T0,
        )
    await downgrade(fresh_engine, "0001")
    assert await current_revision(fresh_engine) == "0001"
    async with fresh_engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: sorted(sa.inspect(sync).get_table_names()))
        columns = await conn.run_sync(
            lambda sync: [c["name"] for c in sa.inspect(sync).get_columns("stream_keys")]
        )
    assert tables == ["alembic_version", "channels", "stream_keys"]
    assert "expires_at" not in columns

    await upgrade(fresh_engine)
    async with fresh_engine.connect() as conn:
        assert await conn.run_sync(_diff, Base.metadata) == []
    async with sessions() as session:
        new = await verify_key(session, secrets=server_secrets, presented=rotated.key, now=T0)
        old = await verify_key(session, secrets=server_secrets, presented=created.key, now=T0)
    assert new.ok
    assert old.reason is RefusalReason.REVOKED  # its overlap ended with the downgrade


async def test_downgrade_to_base_removes_everything(fresh_engine: AsyncEngine) -> None:
    await upgrade(fresh_engine)
    await downgrade(fresh_engine, "base")
    async with fresh_engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        triggers = await conn.run_sync(_triggers)
    assert tables == ["alembic_version"]
    assert triggers == {}
    assert await current_revision(fresh_engine) is None


_CHANNELS_0001 = sa.table(
    "channels",
    sa.column("id", sa.Integer()),
    sa.column("public_id", sa.String()),
    sa.column("name", sa.String()),
    sa.column("created_at", UTCDateTime()),
)
_KEYS_0001 = sa.table(
    "stream_keys",
    sa.column("key_id", sa.String()),
    sa.column("channel_id", sa.Integer()),
    sa.column("key_hash", sa.LargeBinary()),
    sa.column("ciphertext", sa.LargeBinary()),
    sa.column("created_at", UTCDateTime()),
    sa.column("revoked_at", UTCDateTime()),
)


async def test_data_written_at_0001_survives_the_upgrade(
    fresh_engine: AsyncEngine, server_secrets: ServerSecrets
) -> None:
    await upgrade(fresh_engine, "0001")
    active, revoked = generate_key(), generate_key()
    async with fresh_engine.begin() as conn:
        await conn.execute(
            _CHANNELS_0001.insert().values(public_id="ch_old", name="legacy", created_at=T0)
        )
        channel_id = await conn.scalar(sa.select(_CHANNELS_0001.c.id))
        assert isinstance(channel_id, int)
        for generated, revoked_at in ((revoked, T0), (active, None)):
            await conn.execute(
                _KEYS_0001.insert().values(
                    key_id=generated.key_id,
                    channel_id=channel_id,
                    key_hash=key_hash(server_secrets.hmac_key, generated.key),
                    ciphertext=encrypt_key(
                        server_secrets.encryption_key, key_id=generated.key_id, key=generated.key
                    ),
                    created_at=T0,
                    revoked_at=revoked_at,
                )
            )

    await upgrade(fresh_engine)

    async with session_factory(fresh_engine)() as session:
        check = await verify_key(session, secrets=server_secrets, presented=active.key)
        old = await verify_key(session, secrets=server_secrets, presented=revoked.key)
        [summary] = await list_channels(session)
        shown = await reveal_key(
            session, secrets=server_secrets, channel_id=channel_id, actor=audit.Actor.cli()
        )
    assert (check.ok, check.channel_id, check.channel_name) == (True, channel_id, "legacy")
    assert old.reason is RefusalReason.REVOKED
    assert (summary.key_id, summary.owner_id, summary.rotating_key_ids) == (
        active.key_id,
        None,
        (),
    )
    assert shown == active.key


def test_offline_postgresql_script_has_the_whole_schema() -> None:
    # DBAs may want the SQL instead of letting the application migrate: the
    # migrations must render offline too, with no SQLite-only statements.
    output = io.StringIO()
    config = alembic_config("postgresql://user@localhost/stream_sync")
    config.output_buffer = output
    command.upgrade(config, "head", sql=True)
    script = _normalise(output.getvalue())
    for table in Base.metadata.tables:
        assert f"CREATE TABLE {table} (" in script
    assert "CREATE FUNCTION audit_log_append_only() RETURNS trigger" in script
    assert "CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log" in script
    assert (
        "CREATE UNIQUE INDEX uq_stream_keys_channel_id_current ON stream_keys (channel_id) "
        "WHERE revoked_at IS NULL AND expires_at IS NULL" in script
    )
    assert "batch" not in script.lower()
    assert "_alembic_tmp" not in script
    assert "PRAGMA" not in script


def test_alembic_run_by_hand_builds_its_own_engine(tmp_path: Path) -> None:
    # Developers run Alembic without the application: env.py must then open the
    # database from sqlalchemy.url (with the same pragmas) and migrate it.
    command.upgrade(alembic_config(sqlite_url(tmp_path)), "head")
    with closing(sqlite3.connect(tmp_path / "stream-sync.db")) as db:
        version = db.execute("SELECT version_num FROM alembic_version").fetchall()
        journal = db.execute("PRAGMA journal_mode").fetchone()
    assert version == [(head_revision(),)]
    assert journal == ("wal",)
