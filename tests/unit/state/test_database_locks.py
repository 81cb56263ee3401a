"""The database publish locks on both engines: the Redis lock's rules, race-free.

Time is an injected clock: nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stream_sync.credentials import ChannelNotFound
from stream_sync.db import Channel, session_factory
from stream_sync.db.models import PublishLock
from stream_sync.state.database import DatabaseLocks
from stream_sync.state.interfaces import Lease

from .database_engines import add_channel, open_database

TTL = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with open_database(request, tmp_path, request.param) as (engine, _):
        yield engine


@pytest.fixture
def sessions(db: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(db)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def locks(sessions: async_sessionmaker[AsyncSession], clock: Clock) -> DatabaseLocks:
    return DatabaseLocks(sessions, ttl=TTL, clock=clock)


@pytest.fixture
async def channel(sessions: async_sessionmaker[AsyncSession]) -> int:
    return await add_channel(sessions, "main")


async def acquired(locks: DatabaseLocks, channel: int, owner: str, token: int) -> Lease:
    lease = await locks.acquire(channel, owner, owner.split("/", maxsplit=1)[0], token)
    assert lease is not None
    return lease


async def test_acquire_holder_renew_release(
    locks: DatabaseLocks, channel: int, clock: Clock
) -> None:
    assert await locks.holder(channel) is None
    lease = await acquired(locks, channel, "n1/c1", 1)
    assert lease == Lease(channel, "n1/c1", 1, "n1", clock.now)
    assert await locks.holder(channel) == lease
    assert await locks.acquire(channel, "n2/c2", "n2", 2) is None
    assert await locks.acquire(channel, "n1/c1", "n1", 3) is None  # even the same owner
    clock.now += TTL * 0.7
    renewed = await locks.renew(lease)
    assert renewed == Lease(channel, "n1/c1", 1, "n1", clock.now)
    clock.now += TTL * 0.7  # 1.4 TTLs after acquiring, 0.7 after renewing
    assert await locks.holder(channel) == renewed
    await locks.release(Lease(channel, "n1/c1", 99))  # not its token: nothing happens
    assert await locks.holder(channel) == renewed
    await locks.release(lease)
    assert await locks.holder(channel) is None
    assert await locks.renew(lease) is None  # released is gone
    assert await acquired(locks, channel, "n2/c2", 2)


async def test_an_expired_lease_is_as_good_as_gone(
    locks: DatabaseLocks, channel: int, clock: Clock
) -> None:
    lease = await acquired(locks, channel, "n1/c1", 1)
    clock.now += TTL  # the lease ends at exactly acquired + TTL
    assert await locks.holder(channel) is None
    assert await locks.renew(lease) is None
    assert await locks.take_over(lease, "n2/c2", "n2", 2) is None
    successor = await acquired(locks, channel, "n3/c3", 3)
    assert successor == Lease(channel, "n3/c3", 3, "n3", clock.now)
    assert await locks.holder(channel) == successor
    await locks.release(lease)  # the old holder's release cannot free it
    assert await locks.holder(channel) == successor


async def test_take_over_moves_exactly_the_stale_lease(
    locks: DatabaseLocks, channel: int, clock: Clock
) -> None:
    stale = await acquired(locks, channel, "n1/c1", 5)
    with pytest.raises(ValueError, match="larger"):
        await locks.take_over(stale, "n2/c2", "n2", 5)
    assert await locks.take_over(Lease(channel, "n1/c1", 4), "n2/c2", "n2", 6) is None
    clock.now += 1
    new = await locks.take_over(stale, "n2/c2", "n2", 6)
    assert new == Lease(channel, "n2/c2", 6, "n2", clock.now)
    assert await locks.holder(channel) == new
    # The silent holder comes back: it can neither renew, release nor take back.
    assert await locks.renew(stale) is None
    await locks.release(stale)
    assert await locks.take_over(stale, "n1/c1", "n1", 7) is None
    assert await locks.holder(channel) == new
    assert await locks.take_over(new, "n3/c3", "n3", 8) is not None


async def test_the_ttl_must_be_positive(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(ValueError, match="TTL"):
        DatabaseLocks(sessions, ttl=0)


async def test_a_deleted_channel_takes_its_lock_along(
    locks: DatabaseLocks, channel: int, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await acquired(locks, channel, "n1/c1", 1)
    async with sessions() as session, session.begin():
        await session.execute(delete(Channel).where(Channel.id == channel))
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(PublishLock)) == 0
    with pytest.raises(ChannelNotFound):
        await locks.acquire(channel, "n1/c1", "n1", 2)


async def test_two_acquirers_racing_get_exactly_one_lease(
    locks: DatabaseLocks, channel: int, clock: Clock
) -> None:
    token = 0
    for round_ in range(50):
        token += 2
        first, second = await asyncio.gather(
            locks.acquire(channel, f"n1/r{round_}", "n1", token - 1),
            locks.acquire(channel, f"n2/r{round_}", "n2", token),
        )
        assert (first is None) != (second is None), round_
        winner = first or second
        assert await locks.holder(channel) == winner
        if round_ % 2:
            assert winner is not None
            await locks.release(winner)  # the next race is for a free channel
        else:
            clock.now += TTL  # ... or for an expired row


async def test_two_taking_over_the_same_stale_lease_get_one(
    locks: DatabaseLocks, channel: int
) -> None:
    stale = await acquired(locks, channel, "n1/c1", 1)
    for round_ in range(50):
        token = 2 * round_ + 2
        results = await asyncio.gather(
            locks.take_over(stale, f"n2/r{round_}", "n2", token),
            locks.take_over(stale, f"n3/r{round_}", "n3", token + 1),
        )
        [winner] = [lease for lease in results if lease is not None]
        assert await locks.holder(channel) == winner
        stale = winner
