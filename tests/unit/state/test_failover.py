"""The failover between Redis and the database: either may be out of reach.

Time is an injected clock: nothing sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stream_sync.db import create_engine, session_factory
from stream_sync.state.database import DatabaseFencing, DatabaseLocks
from stream_sync.state.errors import StateUnavailable
from stream_sync.state.failover import FailoverFencing, FailoverLocks
from stream_sync.state.interfaces import Lease
from stream_sync.state.redis import RedisState
from tests.support import ManualClock, free_port

from .database_engines import add_channel, open_database

TTL = 10.0


class DownRedis:
    """The Redis locks of a Redis that does not answer."""

    ttl = TTL

    async def _down(self, *args: object) -> None:
        raise StateUnavailable("Redis at test is unavailable (ConnectionError)")

    acquire = renew = release = take_over = holder = _down


@pytest.fixture(params=["sqlite", "postgresql"])
async def sessions(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine: AsyncEngine
    async with open_database(request, tmp_path, request.param) as (engine, _):
        yield session_factory(engine)


async def test_redis_leases_move_or_expire_before_the_database_grants_their_channel(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock()
    live, idle = await add_channel(sessions, "live"), await add_channel(sessions, "idle")
    database = DatabaseLocks(sessions, ttl=TTL, clock=clock)
    holder = FailoverLocks(DownRedis(), database, clock=clock)  # type: ignore[arg-type]
    other = FailoverLocks(DownRedis(), database, clock=clock)  # type: ignore[arg-type]

    # Redis just went: the live channel's lease is still only there.
    with pytest.raises(StateUnavailable):
        await other.acquire(live, "b/c1", "b", 2)
    with pytest.raises(StateUnavailable):  # even a channel nobody holds: nobody can know
        await other.acquire(idle, "b/c2", "b", 3)
    moved = await holder.renew(Lease(live, "a/c1", 1, "a"))  # its next renewal moves it
    assert moved is not None
    clock.now += TTL * 0.6
    assert await holder.renew(moved) is not None  # renewed in the database now
    clock.now += TTL * 0.5  # a TTL since Redis went: every Redis lease moved or expired

    assert await other.acquire(live, "b/c1", "b", 4) is None  # the holder keeps it
    lease = await other.acquire(idle, "b/c2", "b", 5)
    assert lease is not None
    assert lease.owner == "b/c2"


async def test_with_the_database_out_of_reach_redis_alone_decides_and_issues_tokens(
    redis: RedisState,
) -> None:
    """A refused connection is not an SQLAlchemy error: cached keys once could not publish."""
    gone = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone")
    try:
        sessions = session_factory(gone)
        locks = FailoverLocks(redis.locks, DatabaseLocks(sessions, ttl=TTL))
        fencing = FailoverFencing(DatabaseFencing(sessions), redis)
        first = await fencing.next_token()
        lease = await locks.acquire(1, "a/c1", "a", first)
        assert lease is not None
        second = await fencing.next_token()
        assert second > first
        assert await locks.acquire(1, "b/c1", "b", second) is None
        assert await locks.holder(1) == lease
    finally:
        await gone.dispose()
