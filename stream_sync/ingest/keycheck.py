"""Stream keys checked in real time: a cache in front of the database (cache-aside).

- A fresh cached record is checked locally: the HMAC of the presented key under the
  server secret(s) against the cached HMAC. No database query.
- A miss reads the database record by key id and fills the cache only if nothing is
  there (`fill`), so a revocation's tombstone written meanwhile always wins. The
  verdict does not wait for the fill; until it lands, this process's checks of that
  key read the entry it is writing.
- Unknown key ids are cached negatively for a short while and revoked ones for long,
  so an encoder retrying a revoked key every two seconds costs no database query.
- When the cache (Redis) is down, the database answers alone; when the database is
  down, a stale cached record still admits a valid key, and a revoked one never comes
  back because tombstones outlive valid entries.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..background import Background
from ..credentials.keys import key_hash, parse_key_id
from ..credentials.lookup import KeyRecord, read_keys
from ..credentials.server_secrets import ServerSecrets
from ..state.coalesce import Coalescer
from ..state.errors import StateUnavailable
from ..state.interfaces import CachedKey, KeyCache, KeyState

log = logging.getLogger("stream_sync.ingest")


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    ok: bool
    reason: str | None  # malformed, unknown, revoked, expired; None when ok
    key_id: str | None = None
    channel_id: int | None = None
    channel_name: str | None = None
    source: str = "database"  # cache, database, stale-cache


class DatabaseUnavailable(Exception):
    """Neither the database nor the cache could say anything about this key."""


@dataclass(frozen=True, slots=True)
class CacheTimes:
    fresh_for: float = 30.0  # a cached record is trusted this long without the database
    valid_ttl: float = 3600.0  # ...and kept this long for when the database is down
    unknown_ttl: float = 30.0  # a key id that does not exist
    revoked_ttl: float = 7200.0  # tombstones outlive valid entries: nothing revoked returns


class KeyChecker:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        secrets: ServerSecrets,
        cache: KeyCache | None,
        times: CacheTimes = CacheTimes(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._secrets = secrets
        self._cache = cache
        self._times = times
        self._clock = clock
        self.database_lookups = 0
        self._lookups = Coalescer(self._lookup_many)  # a storm's cold keys, read together
        self.cache_available = True
        self._filling: dict[str, CachedKey] = {}  # entries on their way into the cache
        self._fills = Background(log)

    async def check(self, presented: str) -> KeyVerdict:
        key_id = parse_key_id(presented)
        if key_id is None:
            return KeyVerdict(False, "malformed", source="format")
        cached = await self._cached(key_id)
        now = self._clock()
        if cached is not None and (cached.fresh_until > now or cached.state is KeyState.REVOKED):
            return self._judge(cached, presented, now, "cache")
        try:
            record = await self._lookup(key_id)
        except Exception as exc:
            if cached is None:
                raise DatabaseUnavailable(f"cannot check key {key_id}: {exc!r}") from None
            log.warning("database unreachable; key %s checked against the cache", key_id)
            return self._judge(cached, presented, now, "stale-cache")
        entry = self._entry(key_id, record, now)
        self._store_soon(entry, refresh=cached is not None)
        return self._judge(entry, presented, now, "database")

    async def key_state(self, key_id: str) -> KeyState | None:
        """Is this (already verified) key still good? For rechecking live publishers."""
        cached = await self._cached(key_id)
        if cached is not None and (
            cached.fresh_until > self._clock() or cached.state is KeyState.REVOKED
        ):
            return cached.state
        try:
            record = await self._lookup(key_id)
        except Exception:
            return cached.state if cached is not None else None
        entry = self._entry(key_id, record, self._clock())
        self._store_soon(entry, refresh=cached is not None)
        return entry.state

    async def revoked(self, key_id: str, channel_id: int | None = None) -> None:
        """A revocation: tombstone the key id so no node admits it again."""
        self._filling.pop(key_id, None)
        if self._cache is None:
            return
        try:
            await self._cache.tombstone(key_id, self._times.revoked_ttl, channel_id)
        except StateUnavailable:
            self._mark(False)

    # ------------------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait for the cache fills in flight (before the cache is closed)."""
        await self._fills.settle()

    async def _cached(self, key_id: str) -> CachedKey | None:
        if self._cache is None:
            return None
        if (filling := self._filling.get(key_id)) is not None:
            return filling
        try:
            entry = await self._cache.get(key_id)
        except StateUnavailable:
            self._mark(False)
            return None
        self._mark(True)
        return entry

    def _mark(self, available: bool) -> None:
        if available != self.cache_available:
            self.cache_available = available
            if available:
                log.info("key cache reachable again")
            else:
                log.warning("key cache unreachable; checking keys against the database")

    async def _lookup(self, key_id: str) -> KeyRecord | None:
        self.database_lookups += 1
        return await self._lookups(key_id)

    async def _lookup_many(self, key_ids: Sequence[str]) -> list[KeyRecord | None]:
        records = await read_keys(self._sessions, key_ids=set(key_ids))
        return [records.get(key_id) for key_id in key_ids]

    def _entry(self, key_id: str, record: KeyRecord | None, now: float) -> CachedKey:
        times = self._times
        if record is None:
            return CachedKey(key_id, KeyState.UNKNOWN, fresh_until=now + times.unknown_ttl)
        if record.revoked:
            return CachedKey(
                key_id,
                KeyState.REVOKED,
                channel_id=record.channel_id,
                channel_name=record.channel_name,
                fresh_until=now + times.revoked_ttl,
            )
        return CachedKey(
            key_id,
            KeyState.VALID,
            key_hash=record.key_hash,
            channel_id=record.channel_id,
            channel_name=record.channel_name,
            expires_at=record.expires_at,
            fresh_until=now + times.fresh_for,
        )

    def _store_soon(self, entry: CachedKey, *, refresh: bool) -> None:
        """Cache the entry without making the caller wait for Redis (one round trip less
        on every cold admission)."""
        if self._cache is None:
            return
        self._filling[entry.key_id] = entry
        self._fills.spawn(self._fill(entry, refresh), f"cache key {entry.key_id}")

    async def _fill(self, entry: CachedKey, refresh: bool) -> None:
        try:
            await self._store(entry, refresh=refresh)
        finally:
            if self._filling.get(entry.key_id) is entry:
                del self._filling[entry.key_id]

    async def _store(self, entry: CachedKey, *, refresh: bool) -> None:
        if self._cache is None:
            return
        ttl = {
            KeyState.VALID: self._times.valid_ttl,
            KeyState.UNKNOWN: self._times.unknown_ttl,
            KeyState.REVOKED: self._times.revoked_ttl,
        }[entry.state]
        try:
            if entry.state is KeyState.REVOKED:
                await self._cache.tombstone(entry.key_id, ttl, entry.channel_id)
            elif refresh:
                await self._cache.replace(entry, ttl)
            else:
                await self._cache.fill(entry, ttl)
        except StateUnavailable:
            self._mark(False)

    def _judge(self, entry: CachedKey, presented: str, now: float, source: str) -> KeyVerdict:
        def verdict(ok: bool, reason: str | None) -> KeyVerdict:
            return KeyVerdict(
                ok, reason, entry.key_id, entry.channel_id, entry.channel_name, source
            )

        if entry.state is KeyState.UNKNOWN:
            return verdict(False, "unknown")
        if entry.state is KeyState.REVOKED:
            return verdict(False, "revoked")  # key ids are not secret; saying so leaks nothing
        stored = entry.key_hash
        matches = stored is not None and any(
            hmac.compare_digest(key_hash(secret, presented), stored)
            for secret in self._secrets.hmac_keys
        )
        if not matches:
            return verdict(False, "unknown")  # a wrong secret: the same answer as no key
        if entry.expires_at is not None and entry.expires_at <= datetime.fromtimestamp(now, UTC):
            return verdict(False, "expired")
        return verdict(True, None)
