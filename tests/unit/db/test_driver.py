"""The admission path's reads through asyncpg itself: same rows, same errors, no lost
connections."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync.accounts.users import Role, create_user
from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.credentials.lookup import lookup_keys, read_keys
from stream_sync.credentials.server_secrets import ServerSecrets
from stream_sync.db import create_engine, driver, session_factory
from stream_sync.db.engine import autocommit, unreachable
from stream_sync.db.models import StreamKey, User
from tests.databases import emptied

SLEEP = driver.Statement(text("SELECT pg_sleep(:seconds)"))
BACKEND = driver.Statement(text("SELECT pg_backend_pid()"))


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await emptied(postgres_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_key_records_are_the_same_through_either_path(pg: AsyncEngine) -> None:
    sessions = session_factory(pg)
    secrets = ServerSecrets(hmac_key=os.urandom(32), encryption_key=os.urandom(32))
    async with sessions() as session:
        owner = await create_user(
            session,
            email="owner@example.com",
            password="a long enough password",
            role=Role.STREAMER,
            actor=Actor.cli(),
        )
    key_ids = []
    async with sessions() as session:
        for name in ("plain", "expiring", "revoked", "owner-disabled"):
            created = await service.create_channel(
                session,
                secrets=secrets,
                name=name,
                actor=Actor.cli(),
                owner_id=owner.id if name == "owner-disabled" else None,
            )
            key_ids.append(created.key_id)
    expiry = datetime.now(UTC) + timedelta(days=3)
    async with sessions() as session, session.begin():
        await session.execute(
            update(StreamKey).where(StreamKey.key_id == key_ids[1]).values(expires_at=expiry)
        )
        await session.execute(
            update(StreamKey)
            .where(StreamKey.key_id == key_ids[2])
            .values(revoked_at=datetime.now(UTC))
        )
        await session.execute(
            update(User).where(User.id == owner.id).values(disabled_at=datetime.now(UTC))
        )
    wanted = [*key_ids, "no-such-key"]
    async with autocommit(sessions) as connection:
        through_sqlalchemy = await lookup_keys(connection, key_ids=wanted)
    through_driver = await read_keys(sessions, key_ids=wanted)
    assert through_driver == through_sqlalchemy
    assert set(through_driver) == set(key_ids)
    assert through_driver[key_ids[1]].expires_at == expiry
    assert through_driver[key_ids[1]].expires_at.tzinfo is not None
    assert [through_driver[k].revoked for k in key_ids] == [False, False, True, True]


async def test_a_failing_statement_is_a_sqlalchemy_error_and_not_an_outage(
    pg: AsyncEngine,
) -> None:
    broken = driver.Statement(text("SELECT * FROM no_such_table"))
    with pytest.raises(DBAPIError) as raised:
        await driver.fetch(pg, broken, {})
    assert not unreachable(raised.value)
    assert pg.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert (await driver.fetch(pg, BACKEND, {}))[0][0] > 0  # the connection still serves


async def test_a_killed_connection_is_an_outage_and_is_not_handed_out_again(
    pg: AsyncEngine, postgres_url: str
) -> None:
    victim = (await driver.fetch(pg, BACKEND, {}))[0][0]
    killer = create_engine(postgres_url)  # its own pool: not the victim's connection
    try:
        async with killer.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
            gone = text("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = :pid")
            async with asyncio.timeout(10):  # until the victim's backend has exited
                while not await connection.scalar(gone, {"pid": victim}):
                    pass
    finally:
        await killer.dispose()
    # LIFO pool: the next checkout is the killed connection.
    with pytest.raises(OperationalError) as raised:
        await driver.fetch(pg, BACKEND, {})
    assert unreachable(raised.value)
    assert (await driver.fetch(pg, BACKEND, {}))[0][0] not in (victim, 0)
    assert pg.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_read_cancelled_midway_gives_its_connection_up(
    pg: AsyncEngine, postgres_url: str
) -> None:
    before = (await driver.fetch(pg, BACKEND, {}))[0][0]
    task = asyncio.ensure_future(driver.fetch(pg, SLEEP, {"seconds": 30}))
    watcher = create_engine(postgres_url)
    try:
        async with watcher.connect() as connection:
            running = text(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid AND state = 'active'"
            )
            async with asyncio.timeout(10):  # until the server runs the sleep
                while not await connection.scalar(running, {"pid": before}):
                    pass
    finally:
        await watcher.dispose()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pg.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # The connection in an unknown state was dropped; a fresh one answers at once.
    async with asyncio.timeout(5):
        after = (await driver.fetch(pg, BACKEND, {}))[0][0]
    assert after != before
