"""The one-publisher rule and fencing tokens when Redis or the database goes away.

Locks: Redis while it answers, the database's lock table while it does not; never
by hope. A lease remembers which engine issued it. A node renewing a Redis lease
while Redis is down moves it into the database; renewing a database lease once
Redis is back moves it into Redis. A Redis acquisition also checks the database
for a holder from an outage that has not moved back yet, so the two engines never
both grant one channel. The other way round, the database grants nothing new for
one lock TTL after this node saw Redis go (`LocksMoving`): until then a lease
granted by Redis may be live without having moved yet, and granting its channel
would cut the live publisher for an intruder (the fault tests caught exactly that).
After one TTL every Redis lease has either moved or expired. (A partition in which
one node sees Redis and another does not for longer than a lease is the residual
risk; both engines expire leases, and the fencing token tells stale holders apart.)

Fencing tokens come from the database, so they keep growing when Redis restarts
empty. While the database is down, Redis hands them out from a counter that every
database token is written into, so they keep growing across that outage as well.
That write is not waited for (an admission would pay a Redis round trip for it), but
a token from Redis first waits for this process's writes still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from ..background import Background
from ..db.engine import DATABASE_ERRORS
from .coalesce import Coalescer
from .database import DatabaseFencing, DatabaseLocks
from .errors import StateUnavailable
from .interfaces import Lease
from .redis import RedisLocks, RedisState

log = logging.getLogger("stream_sync.state")

_PRIMARY, _FALLBACK = "redis", "database"

# Raise the counter to at least ARGV[1]; returns the counter.
_AT_LEAST = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return wanted
end
return current
"""


class LocksMoving(StateUnavailable):
    """Redis just went away: its leases may still be live and on their way to the database."""


class FailoverLocks:
    def __init__(
        self,
        primary: RedisLocks,
        fallback: DatabaseLocks,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._clock = clock
        self._engine: dict[tuple[int, int], str] = {}  # (channel, token) -> engine
        self.degraded = False
        self._degraded_at = 0.0  # when this node saw Redis go

    def _note(self, degraded: bool) -> None:
        if degraded != self.degraded:
            self.degraded = degraded
            if degraded:
                self._degraded_at = self._clock()
                log.warning("publish locks held in the database while Redis is unavailable")
            else:
                log.info("publish locks back in Redis")

    def _remember(self, lease: Lease | None, engine: str) -> Lease | None:
        if lease is not None:
            self._engine[(lease.channel_id, lease.token)] = engine
        return lease

    async def acquire(self, channel_id: int, owner: str, node: str, token: int) -> Lease | None:
        # The database's holder is read meanwhile, not after: a lease moved there during
        # an outage was moved at least a TTL before its Redis lease could expire.
        elsewhere = asyncio.ensure_future(self._database_holder(channel_id))
        try:
            lease = await self._primary.acquire(channel_id, owner, node, token)
        except StateUnavailable:
            elsewhere.cancel()
            self._note(True)
            moving = self._primary.ttl - (self._clock() - self._degraded_at)
            if moving > 0:  # the channel's Redis lease, if any, may not have moved yet
                raise LocksMoving(
                    f"publish locks are moving to the database ({moving:.1f} s more)"
                ) from None
            return self._remember(
                await self._fallback.acquire(channel_id, owner, node, token), _FALLBACK
            )
        except BaseException:
            elsewhere.cancel()
            raise
        self._note(False)
        if lease is None:
            elsewhere.cancel()
            return None
        other = await elsewhere
        if other is not None and other.owner != owner:
            await self._primary.release(lease)  # an outage-era holder still owns it
            return None
        return self._remember(lease, _PRIMARY)

    async def _database_holder(self, channel_id: int) -> Lease | None:
        try:
            return await self._fallback.holder(channel_id)
        except DATABASE_ERRORS:
            return None  # the database is down too: Redis alone decides

    async def renew(self, lease: Lease) -> Lease | None:
        key = (lease.channel_id, lease.token)
        if self._engine.get(key, _PRIMARY) == _PRIMARY:
            try:
                renewed = await self._primary.renew(lease)
            except StateUnavailable:
                self._note(True)
                moved = await self._fallback.acquire(
                    lease.channel_id, lease.owner, lease.node, lease.token
                )
                if moved is None:
                    self._engine.pop(key, None)
                return self._remember(moved, _FALLBACK)
            if renewed is None:
                self._engine.pop(key, None)
            return renewed
        try:
            moved = await self._primary.acquire(
                lease.channel_id, lease.owner, lease.node, lease.token
            )
        except StateUnavailable:
            renewed = await self._fallback.renew(lease)
            if renewed is None:
                self._engine.pop(key, None)
            return renewed
        self._note(False)
        if moved is not None:
            await self._fallback.release(lease)
            return self._remember(moved, _PRIMARY)
        holder = await self._primary.holder(lease.channel_id)
        if holder is not None and holder.token > lease.token:
            self._engine.pop(key, None)
            return None  # someone newer holds it in Redis
        return await self._fallback.renew(lease)

    async def release(self, lease: Lease) -> None:
        engine = self._engine.pop((lease.channel_id, lease.token), _PRIMARY)
        if engine == _PRIMARY:
            with contextlib.suppress(StateUnavailable):  # it expires by TTL
                await self._primary.release(lease)
        else:
            await self._fallback.release(lease)

    async def take_over(self, stale: Lease, owner: str, node: str, token: int) -> Lease | None:
        try:
            lease = await self._primary.take_over(stale, owner, node, token)
            if lease is not None:
                return self._remember(lease, _PRIMARY)
        except StateUnavailable:
            self._note(True)
        return self._remember(await self._fallback.take_over(stale, owner, node, token), _FALLBACK)

    async def holder(self, channel_id: int) -> Lease | None:
        try:
            lease = await self._primary.holder(channel_id)
        except StateUnavailable:
            self._note(True)
            return await self._fallback.holder(channel_id)
        if lease is not None:
            return lease
        try:
            return await self._fallback.holder(channel_id)
        except DATABASE_ERRORS:
            return None


class FailoverFencing:
    def __init__(self, database: DatabaseFencing, redis: RedisState | None) -> None:
        self._database = database
        self._redis = redis
        self._at_least = redis.client.register_script(_AT_LEAST) if redis else None
        self._issued_by_redis = False
        self._catch_up = Coalescer(self._raise_redis)  # one call for a storm's tokens
        self._catching_up = Background(log)

    async def next_token(self) -> int:
        try:
            token = await self._database.next_token()
        except DATABASE_ERRORS:
            if self._redis is None:
                raise
            await self.settle()  # Redis must have seen every database token first
            token = int(await self._redis.run(self._redis.client.incr(self._key)))
            self._issued_by_redis = True
            log.warning("fencing token %d from Redis: the database is unavailable", token)
            return token
        if self._issued_by_redis and self._redis is not None:
            # Back from a database outage: lift the database above what Redis issued.
            with_redis = await self._redis.run(self._redis.client.get(self._key))
            if with_redis is not None and int(with_redis) >= token:
                await self._database.observe(int(with_redis))
                token = await self._database.next_token()
            self._issued_by_redis = False
        if self._redis is not None:
            self._catching_up.spawn(
                self._tell_redis(token), f"raise Redis's fencing counter to {token}"
            )
        return token

    async def settle(self) -> None:
        """Wait for the writes to Redis in flight (before it is closed)."""
        await self._catching_up.settle()

    async def _tell_redis(self, token: int) -> None:
        with contextlib.suppress(StateUnavailable):  # the next token's write raises it past
            await self._catch_up(token)

    async def _raise_redis(self, tokens: Sequence[int]) -> list[None]:
        if self._redis is not None and self._at_least is not None:
            await self._redis.run(self._at_least(keys=[self._key], args=[max(tokens)]))
        return [None] * len(tokens)

    @property
    def _key(self) -> str:
        assert self._redis is not None
        return self._redis.key("fencing")
