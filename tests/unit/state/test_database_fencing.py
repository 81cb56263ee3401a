"""Fencing tokens from the database: always growing, across tasks, engines and restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from stream_sync.db import create_engine, session_factory
from stream_sync.db.models import Counter
from stream_sync.state.database import DatabaseFencing, ReservedFencing

from .database_engines import open_database


@pytest.fixture(params=["sqlite", "postgresql"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_tokens_grow_under_concurrency_and_across_processes(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    async with open_database(request, tmp_path, kind) as (engine, url):
        fencing = DatabaseFencing(session_factory(engine))
        assert await fencing.current() == 0
        assert await fencing.next_token() == 1
        tokens = await asyncio.gather(*(fencing.next_token() for _ in range(50)))
        assert sorted(tokens) == list(range(2, 52))
        assert await fencing.current() == 51
    # Another process (a new engine, nothing shared in memory) goes on from there.
    restarted = create_engine(url)
    try:
        again = DatabaseFencing(session_factory(restarted))
        assert await again.next_token() == 52
    finally:
        await restarted.dispose()


async def test_observe_only_raises_the_counter(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    async with open_database(request, tmp_path, kind) as (engine, _):
        fencing = DatabaseFencing(session_factory(engine))
        await fencing.observe(1000)
        assert await fencing.next_token() == 1001
        await fencing.observe(10)
        assert await fencing.next_token() == 1002


async def test_a_missing_counter_row_is_created(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    async with open_database(request, tmp_path, kind) as (engine, _):
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            await session.execute(delete(Counter))
        fencing = DatabaseFencing(sessions)
        assert await fencing.current() == 0
        assert await fencing.next_token() == 1
        async with sessions() as session, session.begin():
            await session.execute(delete(Counter))
        await fencing.observe(7)
        assert await fencing.next_token() == 8


async def test_reserved_blocks_grow_across_restarts_and_cost_one_write_a_block(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    async with open_database(request, tmp_path, kind) as (engine, _):
        database = DatabaseFencing(session_factory(engine))
        fencing = ReservedFencing(database, block=10)
        tokens = await asyncio.gather(*(fencing.next_token() for _ in range(15)))
        assert sorted(tokens) == list(range(1, 16))
        assert await database.current() == 20  # two blocks reserved, no more
        restarted = ReservedFencing(DatabaseFencing(session_factory(engine)), block=10)
        assert await restarted.next_token() == 21  # the rest of the block is skipped
        assert await database.current() == 30
        with pytest.raises(ValueError, match="at least one"):
            ReservedFencing(database, block=0)


class GatedFencing(DatabaseFencing):
    """The real database, with each reservation held at a gate until the test opens it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = 0
        self.waiting = asyncio.Event()
        self.gate = asyncio.Event()

    async def next_tokens(self, count: int) -> list[int]:
        self.entered += 1
        self.waiting.set()
        await self.gate.wait()
        return await super().next_tokens(count)


async def test_a_waiter_given_up_on_does_not_cancel_the_reservation_others_wait_for(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """An admission refused early drops its token; the block it started is still reserved."""
    async with open_database(request, tmp_path, kind) as (engine, _):
        database = GatedFencing(session_factory(engine))
        fencing = ReservedFencing(database, block=10)
        refused = asyncio.get_running_loop().create_task(fencing.next_token())
        await asyncio.wait_for(database.waiting.wait(), 5)
        refused.cancel()
        admitted = asyncio.get_running_loop().create_task(fencing.next_token())
        database.gate.set()
        assert await asyncio.wait_for(admitted, 5) == 1
        assert refused.cancelled()
        assert database.entered == 1  # it joined the reservation in flight
        assert await database.current() == 10
