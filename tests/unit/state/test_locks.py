"""Publish locks on both engines: one holder per channel, fenced by exact tokens."""

from __future__ import annotations

import asyncio

import pytest

from stream_sync.state.interfaces import Lease

from .conftest import LOCK_TTL, SHORT_TTL, Engine

CHANNEL = 7


async def acquired(engine: Engine, owner: str = "n1/c1", token: int = 1) -> Lease:
    node, _ = owner.split("/")
    lease = await engine.locks.acquire(CHANNEL, owner, node, token)
    assert lease is not None
    return lease


async def test_acquire_grants_a_lease(engine: Engine) -> None:
    lease = await acquired(engine)
    assert (lease.channel_id, lease.owner, lease.node, lease.token) == (CHANNEL, "n1/c1", "n1", 1)
    assert lease.renewed_at > 1_600_000_000  # epoch seconds
    assert await engine.locks.holder(CHANNEL) == lease


async def test_a_held_channel_refuses_everyone_else(engine: Engine) -> None:
    lease = await acquired(engine)
    assert await engine.locks.acquire(CHANNEL, "n2/c9", "n2", 2) is None
    assert await engine.locks.acquire(CHANNEL, "n1/c1", "n1", 3) is None  # even the same owner
    assert await engine.locks.holder(CHANNEL) == lease
    other = await engine.locks.acquire(CHANNEL + 1, "n2/c9", "n2", 2)
    assert other is not None  # channels are independent


async def test_holder_of_a_free_channel_is_none(engine: Engine) -> None:
    assert await engine.locks.holder(CHANNEL) is None


async def test_renew_moves_renewed_at_forward(engine: Engine) -> None:
    lease = await acquired(engine)
    engine.tick()
    renewed = await engine.locks.renew(lease)
    assert renewed is not None
    assert renewed.token == lease.token
    assert renewed.owner == lease.owner
    assert renewed.renewed_at > lease.renewed_at
    assert await engine.locks.holder(CHANNEL) == renewed


async def test_renew_extends_the_ttl(engine: Engine) -> None:
    lease = await acquired(engine)
    await engine.age(LOCK_TTL * 0.7, "lock", CHANNEL)
    assert await engine.locks.renew(lease) is not None
    await engine.age(LOCK_TTL * 0.7, "lock", CHANNEL)  # 1.4 TTLs after acquiring
    holder = await engine.locks.holder(CHANNEL)
    assert holder is not None
    assert holder.token == lease.token
    await engine.age(LOCK_TTL * 0.4, "lock", CHANNEL)  # 1.1 TTLs after renewing
    assert await engine.locks.holder(CHANNEL) is None


async def test_renew_after_a_takeover_is_none(engine: Engine) -> None:
    lease = await acquired(engine)
    taken = await engine.locks.take_over(lease, "n2/c5", "n2", 2)
    assert taken is not None
    assert await engine.locks.renew(lease) is None
    assert await engine.locks.holder(CHANNEL) == taken  # and the renewal changed nothing


async def test_renew_of_an_expired_lease_is_none(engine: Engine) -> None:
    lease = await acquired(engine)
    await engine.age(LOCK_TTL * 1.1, "lock", CHANNEL)
    assert await engine.locks.renew(lease) is None
    assert await engine.locks.holder(CHANNEL) is None  # renew does not resurrect it


async def test_release_needs_the_exact_token(engine: Engine) -> None:
    lease = await acquired(engine)
    for impostor in (
        Lease(CHANNEL, lease.owner, lease.token + 1, lease.node),
        Lease(CHANNEL, lease.owner, lease.token - 1, lease.node),
    ):
        await engine.locks.release(impostor)
        assert await engine.locks.holder(CHANNEL) == lease
    await engine.locks.release(lease)
    assert await engine.locks.holder(CHANNEL) is None
    assert await acquired(engine, "n2/c2", token=2)  # free for the next publisher


async def test_a_stale_holder_cannot_release_its_successor(engine: Engine) -> None:
    lease = await acquired(engine)
    taken = await engine.locks.take_over(lease, "n2/c5", "n2", 2)
    await engine.locks.release(lease)
    assert await engine.locks.holder(CHANNEL) == taken


async def test_take_over_moves_exactly_the_stale_lease(engine: Engine) -> None:
    stale = await acquired(engine)
    taken = await engine.locks.take_over(stale, "n2/c5", "n2", 5)
    assert taken is not None
    assert (taken.owner, taken.node, taken.token) == ("n2/c5", "n2", 5)
    assert await engine.locks.holder(CHANNEL) == taken
    # A second node that judged the same lease stale comes too late.
    assert await engine.locks.take_over(stale, "n3/c1", "n3", 6) is None
    assert await engine.locks.holder(CHANNEL) == taken


async def test_take_over_of_a_free_channel_fails(engine: Engine) -> None:
    stale = await acquired(engine)
    await engine.locks.release(stale)
    assert await engine.locks.take_over(stale, "n2/c5", "n2", 2) is None
    assert await engine.locks.holder(CHANNEL) is None


async def test_take_over_needs_a_larger_token(engine: Engine) -> None:
    stale = await acquired(engine, token=5)
    with pytest.raises(ValueError, match="larger"):
        await engine.locks.take_over(stale, "n2/c5", "n2", 5)
    assert await engine.locks.holder(CHANNEL) == stale


async def test_tokens_compare_exactly_beyond_float_precision(engine: Engine) -> None:
    # 2**62 + 1 and 2**62 + 2 are the same double: a float comparison would mix them up.
    big = 2**62 + 1
    lease = await acquired(engine, token=big)
    assert lease.token == big
    assert await engine.locks.renew(Lease(CHANNEL, "n1/c1", big + 1, "n1")) is None
    await engine.locks.release(Lease(CHANNEL, "n1/c1", big + 1, "n1"))
    assert await engine.locks.holder(CHANNEL) == lease
    renewed = await engine.locks.renew(lease)
    assert renewed is not None
    assert renewed.token == big


async def test_expiry_frees_the_channel(engine: Engine) -> None:
    locks = engine.short_locks()
    lease = await locks.acquire(CHANNEL, "n1/c1", "n1", 1)
    assert lease is not None

    async def gone() -> bool:
        return await locks.holder(CHANNEL) is None

    await engine.let_expire(SHORT_TTL, gone)
    assert await locks.acquire(CHANNEL, "n2/c1", "n2", 2) is not None


async def test_concurrent_calls_each_get_their_own_answer(engine: Engine) -> None:
    """A node renews all its leases at once (Redis: one script call); no answer is mixed up."""
    owners = [f"n1/c{channel}" for channel in range(1, 21)]
    acquired_leases = await asyncio.gather(
        *(engine.locks.acquire(channel, owner, "n1", channel) for channel, owner in
          enumerate(owners, start=1)),
        engine.locks.acquire(1, "n2/c1", "n2", 99),  # the same channel, in the same batch
    )  # fmt: skip
    leases = acquired_leases[:-1]
    assert all(lease is not None for lease in leases)
    assert acquired_leases[-1] is None  # exactly one winner per channel
    live = [lease for lease in leases if lease is not None]
    lost = live[4]
    taken = await engine.locks.take_over(lost, "n2/c5", "n2", 100)
    assert taken is not None

    renewed = await asyncio.gather(*(engine.locks.renew(lease) for lease in live))

    assert [lease is None for lease in renewed] == [lease is lost for lease in live]
    assert [lease.owner for lease in renewed if lease] == [o for o in owners if o != "n1/c5"]
    assert await engine.locks.holder(5) == taken
