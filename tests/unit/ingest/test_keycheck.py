"""Cache-aside key checks: what the database is asked, and what survives its absence."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.credentials.server_secrets import ServerSecrets
from stream_sync.db import session_factory
from stream_sync.ingest.keycheck import CacheTimes, DatabaseUnavailable, KeyChecker
from stream_sync.state.inprocess import InProcessKeyCache
from stream_sync.state.interfaces import CachedKey


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Switchable:
    """A session factory, and its engine, that can be made to fail, like a database that
    went away. (On PostgreSQL the key lookup takes the engine from ``kw``: db/driver.py.)"""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.engine = factory.kw["bind"]
        self.dialect = self.engine.dialect
        self.kw = {"bind": self}
        self.down = False

    def __call__(self) -> Any:
        if self.down:
            raise ConnectionRefusedError("database down")
        return self.factory()

    def connect(self) -> Any:
        if self.down:
            raise ConnectionRefusedError("database down")
        return self.engine.connect()


async def setup(
    engine: AsyncEngine,
) -> tuple[KeyChecker, Switchable, Clock, service.CreatedChannel, Any]:
    sessions = session_factory(engine)
    secrets = ServerSecrets(hmac_key=os.urandom(32), encryption_key=os.urandom(32))
    async with sessions() as session:
        created = await service.create_channel(
            session, secrets=secrets, name="c", actor=Actor.cli()
        )
    switch, clock = Switchable(sessions), Clock()
    cache = InProcessKeyCache(wall=clock)
    checker = KeyChecker(
        sessions=switch,  # type: ignore[arg-type]
        secrets=secrets,
        cache=cache,
        times=CacheTimes(fresh_for=30, valid_ttl=3600, unknown_ttl=30, revoked_ttl=7200),
        clock=clock,
    )
    return checker, switch, clock, created, (sessions, secrets)


async def test_a_fresh_cached_key_costs_no_query(engine: AsyncEngine) -> None:
    checker, _, _, created, _ = await setup(engine)
    for _ in range(10):
        assert (await checker.check(created.key)).ok
    assert checker.database_lookups == 1


async def test_a_wrong_secret_never_locks_the_owner_out(engine: AsyncEngine) -> None:
    checker, _, _, created, _ = await setup(engine)
    forged = created.key[:-5] + ("AAAAA" if not created.key.endswith("AAAAA") else "BBBBB")
    verdict = await checker.check(forged)
    assert (verdict.ok, verdict.reason) == (False, "unknown")
    assert (await checker.check(created.key)).ok  # the record, not the failure, was cached
    assert checker.database_lookups == 1


async def test_unknown_key_ids_are_cached_briefly(engine: AsyncEngine) -> None:
    checker, _, clock, _, _ = await setup(engine)
    stranger = "ssk_ZZZZZZZZZZZZ_" + "Q" * 43
    for _ in range(5):
        assert (await checker.check(stranger)).reason == "unknown"
    assert checker.database_lookups == 1
    clock.now += 31
    await checker.check(stranger)
    assert checker.database_lookups == 2


async def test_the_database_down_keeps_valid_keys_working_and_revoked_ones_out(
    engine: AsyncEngine,
) -> None:
    checker, switch, clock, created, _ = await setup(engine)
    assert (await checker.check(created.key)).ok
    await checker.revoked("Rev000000000", created.channel_id)
    switch.down = True
    clock.now += 600  # long past "fresh": the database would be asked, but it is down
    stale = await checker.check(created.key)
    assert stale.ok
    assert stale.source == "stale-cache"
    revoked = await checker.check("ssk_Rev000000000_" + "x" * 43)
    assert revoked.reason == "revoked"
    never_seen = "ssk_NeverSeen000_" + "x" * 43
    try:
        await checker.check(never_seen)
    except DatabaseUnavailable:
        pass
    else:
        raise AssertionError("a key nobody knows must not be admitted without the database")


async def test_a_revocation_beats_a_refresh_that_raced_it(engine: AsyncEngine) -> None:
    checker, _, clock, created, (sessions, secrets) = await setup(engine)
    assert (await checker.check(created.key)).ok
    async with sessions() as session:
        await service.reset_key(
            session, secrets=secrets, channel_id=created.channel_id, actor=Actor.cli()
        )
    await checker.revoked(created.key_id, created.channel_id)
    clock.now += 600  # a refresh now reads the database (revoked) and must not undo anything
    verdict = await checker.check(created.key)
    assert verdict.reason == "revoked"
    assert verdict.channel_id == created.channel_id


class SlowFills(InProcessKeyCache):
    """The in-process cache, whose fills wait until the test lets them land (Redis's
    round trip, stretched)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.land = asyncio.Event()

    async def fill(self, entry: CachedKey, ttl: float) -> bool:
        await self.land.wait()
        return await super().fill(entry, ttl)


async def test_a_revocation_beats_the_fill_of_a_check_just_before_it(engine: AsyncEngine) -> None:
    """The verdict does not wait for its cache fill; a revocation meanwhile still wins."""
    checker, _, clock, created, (sessions, secrets) = await setup(engine)
    cache = SlowFills(wall=clock)
    checker = KeyChecker(sessions=sessions, secrets=secrets, cache=cache, clock=clock)
    assert (await checker.check(created.key)).ok  # its fill has not landed
    assert (await checker.check(created.key)).ok  # nor asked the database again
    assert checker.database_lookups == 1
    async with sessions() as session:
        await service.reset_key(
            session, secrets=secrets, channel_id=created.channel_id, actor=Actor.cli()
        )
    await checker.revoked(created.key_id, created.channel_id)
    assert (await checker.check(created.key)).reason == "revoked"
    cache.land.set()
    await checker.settle()  # the fill lands after the tombstone, and must not undo it
    assert (await checker.check(created.key)).reason == "revoked"
