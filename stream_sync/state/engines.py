"""Choosing the state engines: in-process for one `serve`, Redis for a cluster.

With Redis, the one-publisher rule and fencing fail over to the database (see
failover.py), the key cache and registry live in Redis, and the bus is Redis
Pub/Sub. Without it, everything is in this process; fencing tokens still come from
blocks reserved in the database so they keep growing across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .database import DatabaseFencing, DatabaseLocks, ReservedFencing
from .failover import FailoverFencing, FailoverLocks
from .inprocess import (
    InProcessBus,
    InProcessKeyCache,
    InProcessLocks,
    InProcessRegistry,
    InProcessThumbnails,
)
from .interfaces import (
    EventBus,
    FencingTokens,
    KeyCache,
    NodeRegistry,
    PublishLocks,
    ThumbnailStore,
)
from .redis import RedisState


@dataclass
class StateEngines:
    bus: EventBus
    locks: PublishLocks
    fencing: FencingTokens
    cache: KeyCache
    registry: NodeRegistry
    thumbnails: ThumbnailStore
    redis: RedisState | None = None

    @property
    def shared(self) -> bool:
        """True when other processes see the same state (Redis)."""
        return self.redis is not None

    async def redis_status(self) -> str:
        if self.redis is None:
            return "not configured"
        return "ok" if await self.redis.ping() else "unreachable (falling back to the database)"

    async def close(self) -> None:
        if isinstance(self.fencing, FailoverFencing):
            await self.fencing.settle()
        if self.redis is not None:
            await self.redis.close()
        elif isinstance(self.bus, InProcessBus):
            self.bus.close()


def open_state(
    sessions: async_sessionmaker[AsyncSession],
    *,
    redis_url: str | None,
    prefix: str = "ss",
    lock_ttl: float = 10.0,
    control_only: bool = False,
) -> StateEngines:
    """``control_only``: the bus hears CONTROL_EVENTS only (a process that runs ingest alone)."""
    fencing = DatabaseFencing(sessions)
    if redis_url is None:
        return StateEngines(
            bus=InProcessBus(),
            locks=InProcessLocks(ttl=lock_ttl),
            fencing=ReservedFencing(fencing),
            cache=InProcessKeyCache(),
            registry=InProcessRegistry(),
            thumbnails=InProcessThumbnails(),
        )
    redis = RedisState.connect(redis_url, prefix, lock_ttl=lock_ttl, control_only=control_only)
    return StateEngines(
        bus=redis.bus,
        locks=FailoverLocks(redis.locks, DatabaseLocks(sessions, ttl=lock_ttl)),
        fencing=FailoverFencing(fencing, redis),
        cache=redis.key_cache,
        registry=redis.registry,
        thumbnails=redis.thumbnails,
        redis=redis,
    )
