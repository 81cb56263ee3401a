"""The Redis engine: state shared by several ingest nodes.

Redis keeps nothing on disk here and may vanish at any moment, so every call is
bounded (about a second) and any connection problem surfaces as StateUnavailable:
callers fall back to the database, which stays the source of truth. Timestamps
written into Redis come from Redis's own clock (TIME inside the Lua scripts), so
the nodes' clocks don't have to agree.

Keys, all under one prefix so deployments and tests can share a server:
  {prefix}:key:{key id}     a cached key check (JSON), PX TTL
  {prefix}:lock:{channel}   the publish lease (JSON), PX TTL
  {prefix}:node:{node id}   a node's NodeInfo (JSON), PX TTL
  {prefix}:nodes            set of node ids (pruned when their key expired)
  {prefix}:events           the Pub/Sub channel of the event bus
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import struct
import time
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import orjson
import redis.asyncio
from redis import exceptions as redis_errors
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo

from .coalesce import Coalescer
from .codec import decode_event, encode_event
from .errors import StateUnavailable
from .inprocess import (
    DEFAULT_LOCK_TTL,
    DEFAULT_QUEUE_SIZE,
    FanOut,
    InProcessSubscription,
    LogThrottle,
    check_successor,
    check_ttl,
)
from .interfaces import (
    CONTROL_EVENTS,
    BusEvent,
    CachedKey,
    KeyState,
    Lease,
    NodeInfo,
    StreamStats,
    Thumbnail,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PREFIX = "ss"
DEFAULT_TIMEOUT = 1.0  # the longest any call may take before it counts as "Redis is down"
DEFAULT_CONNECT_TIMEOUT = 0.5
MAX_EVENT_BYTES = 1 << 20
STATS_PER_MESSAGE = 100  # a stream's statistics take 2-3 KB of JSON
_STATS_ONLY = frozenset({"StreamStats"})

# Failures that mean "Redis is not usable right now", as opposed to a bug in a command.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # also BusyLoadingError (a restart loading) and auth failures
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a replica after a failover
    redis_errors.OutOfMemoryError,
    redis_errors.MasterDownError,
    OSError,  # includes TimeoutError from our own deadline
)


def _lost(exc: BaseException) -> bool:
    """Redis went away, said by `exc` or by what it was raised while handling.

    redis-py reconnecting a subscription to a dead server can fail with the event
    loop's RuntimeError about a closed transport, raised while it handled the
    ConnectionError: an outage too, not a bug to log with a traceback.
    """
    seen: BaseException | None = exc
    for _ in range(5):  # a short chain: what failed, and what it was handling
        if seen is None:
            return False
        if isinstance(seen, _UNAVAILABLE):
            return True
        seen = seen.__context__
    return False


# Lua: Redis's clock as epoch seconds with microseconds, written into JSON as a number.
_NOW = """
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
"""
# The token is the first member of a lease's JSON, so scripts compare it as a string:
# exact at any size, unlike cjson's 14-digit numbers.
_LUA_FENCE_OF = """
local function token_of(value)
  return string.match(value, '^{"token":(%-?%d+),')
end
"""
# Acquires many leases in one call (KEYS: the locks; ARGV: the TTL, then a head per
# lock): each is set only if free, and the new lease or false comes back for each. One
# script call per storm batch: a pipeline of scripts costs a SCRIPT EXISTS round trip
# before it runs, and redis-py's packing of each command on top.
_ACQUIRE_MANY = (
    _NOW
    + """
local acquired = {}
for i, key in ipairs(KEYS) do
  local value = ARGV[i + 1] .. now .. '}'
  if redis.call('SET', key, value, 'NX', 'PX', ARGV[1]) then
    acquired[i] = value
  else
    acquired[i] = false
  end
end
return acquired
"""
)
# Renews many leases in one call (KEYS: the locks; ARGV: the TTL, then a token per lock).
# A lease whose token matches keeps its stored head (owner and node belong to the token)
# and gets Redis's time as its renewed_at; only that time comes back for it, a string
# that is not JSON. Otherwise what is stored comes back (false if nothing): a caller
# whose token lost sees the newer lease. One call, not one per lease in a pipeline:
# those cost the workers more each second than anything else outside the media path;
# sending heads and decoding whole leases back was most of what was left.
_RENEW_MANY = (
    _LUA_FENCE_OF
    + _NOW
    + """
local stored = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local head = current and token_of(current) == ARGV[i + 1]
    and string.match(current, '^(.*,"renewed_at":)')
  if head then
    redis.call('SET', key, head .. now .. '}', 'PX', ARGV[1])
    stored[i] = now
  else
    stored[i] = current or false
  end
end
return stored
"""
)
_RELEASE = (
    _LUA_FENCE_OF
    + """
local current = redis.call('GET', KEYS[1])
if current and token_of(current) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)
_TAKE_OVER = (
    _LUA_FENCE_OF
    + """
local current = redis.call('GET', KEYS[1])
if not current or token_of(current) ~= ARGV[1] then
  return false
end
"""
    + _NOW
    + """
local value = ARGV[2] .. now .. '}'
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return value
"""
)
_HEARTBEAT = (
    _NOW
    + """
local value = ARGV[1] .. now .. '}'
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return value
"""
)
# KEYS[1] the node set, KEYS[i + 1] the key of node ARGV[i]: forget it if still expired
# (it may have heartbeated again since the caller looked).
_PRUNE = """
for i, node_id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    redis.call('SREM', KEYS[1], node_id)
  end
end
return 0
"""


def _ms(ttl: float) -> int:
    check_ttl(ttl)
    return max(1, round(ttl * 1000))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _head(fields: dict[str, Any], last: str) -> str:
    """JSON of fields with an open last member, for a script to append Redis's time."""
    return _json(fields)[:-1] + f',"{last}":'


def _describe(url: str) -> str:
    """The server for messages: host and port or socket path, never the password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"Redis at {parts.path}"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"Redis at {parts.hostname or 'localhost'}:{port}"


POOL_SIZE = 64  # connections per process; more callers wait (up to the timeout)
# What each new connection tells the server (CLIENT SETINFO). Given once: left to
# redis-py, every connection looks its version up in the installed packages' metadata,
# which cost more than the commands of an admission in a storm of them.
DRIVER = DriverInfo(name="redis-py", lib_version=redis.__version__)


class RedisState:
    """One Redis connection pool and the engines built on it."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        prefix: str = DEFAULT_PREFIX,
        *,
        where: str = "Redis",
        lock_ttl: float = DEFAULT_LOCK_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        control_only: bool = False,
    ) -> None:
        if not prefix:
            raise ValueError("the Redis key prefix must not be empty")
        self.client = client
        self.prefix = prefix
        self.where = where
        self.timeout = timeout
        self._available = True  # for logging transitions, not for deciding anything
        self.key_cache = RedisKeyCache(self)
        self.locks = RedisLocks(self, ttl=lock_ttl)
        self.registry = RedisRegistry(self)
        self.thumbnails = RedisThumbnails(self)
        self.bus = RedisBus(self, queue_size=queue_size, control_only=control_only)

    @classmethod
    def connect(
        cls,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        lock_ttl: float = DEFAULT_LOCK_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        control_only: bool = False,
    ) -> RedisState:
        """A client for url; nothing is sent yet, so a node starts while Redis is down.

        No retries inside redis-py: one failed attempt is reported at once and the
        caller falls back. A pooled connection the server closed is replaced when
        it is checked out, so calls work again as soon as Redis is back.
        """
        # A bounded pool that queues: a storm of publishers waits a moment for a
        # connection instead of failing over to the database as if Redis were down.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=timeout,
            socket_connect_timeout=min(connect_timeout, timeout),
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,  # see RedisBus for the subscriber's own liveness check
            driver_info=DRIVER,
            # RESP2, not redis-py 8's default RESP3: its parser hands every Pub/Sub message
            # to a push handler that formats the whole message for a debug log, wanted or
            # not, and a second's statistics of a hundred streams are 170 KB.
            protocol=2,
        )
        client = redis.asyncio.Redis.from_pool(pool)  # closing the client closes the pool
        return cls(
            client,
            prefix,
            where=_describe(url),
            lock_ttl=lock_ttl,
            timeout=timeout,
            queue_size=queue_size,
            control_only=control_only,
        )

    def key(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    async def run(self, operation: Awaitable[T]) -> T:
        """Await a Redis call within the deadline; any connection trouble is StateUnavailable."""
        try:
            async with asyncio.timeout(self.timeout):
                result = await operation
        except _UNAVAILABLE as exc:
            if self._available:
                self._available = False
                log.warning("%s is unavailable (%s)", self.where, type(exc).__name__)
            raise StateUnavailable(f"{self.where} is unavailable ({type(exc).__name__})") from exc
        if not self._available:
            self._available = True
            log.info("%s is available again", self.where)
            # A restarted Redis closed every connection opened before, and redis-py does
            # not notice at checkout (EOF reads as "no data pending"): an idle one would
            # fail the next call that draws it, an admission say. Drop them now.
            with contextlib.suppress(OSError):
                await self.client.connection_pool.disconnect(inuse_connections=False)
        return result

    async def warm(self, connections: int) -> None:
        """Connect ``connections`` of the pool now: a storm right after a start would
        otherwise open them inside its first admissions."""
        pool = self.client.connection_pool
        opened = []
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(min(connections, POOL_SIZE)):
                    opened.append(await pool.get_connection())  # type: ignore[no-untyped-call]
        except _UNAVAILABLE as exc:
            log.warning("%s: could not connect ahead (%s)", self.where, type(exc).__name__)
        finally:
            for connection in opened:
                await pool.release(connection)

    async def ping(self) -> bool:
        try:
            return bool(await self.run(self.client.ping()))
        except StateUnavailable:
            return False

    async def close(self) -> None:
        self.bus.close()
        await self.bus.wait_closed()
        await self.client.aclose()


# --- Key cache -------------------------------------------------------------------------------


def encode_cached_key(entry: CachedKey) -> str:
    key_hash = entry.key_hash
    return _json(
        {
            "key_id": entry.key_id,
            "state": entry.state.value,
            "key_hash": None if key_hash is None else base64.b64encode(key_hash).decode("ascii"),
            "channel_id": entry.channel_id,
            "channel_name": entry.channel_name,
            "expires_at": None if entry.expires_at is None else entry.expires_at.isoformat(),
            "fresh_until": entry.fresh_until,
        }
    )


def decode_cached_key(raw: bytes | str) -> CachedKey:
    """Raises ValueError for anything that is not exactly what encode_cached_key writes."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a cached key is an object")
    key_id, key_hash, expires_at = data.get("key_id"), data.get("key_hash"), data.get("expires_at")
    channel_id, channel_name = data.get("channel_id"), data.get("channel_name")
    fresh_until = data.get("fresh_until")
    if not (
        isinstance(key_id, str)
        and isinstance(key_hash, str | None)
        and isinstance(expires_at, str | None)
        and isinstance(channel_id, int | None)
        and not isinstance(channel_id, bool)
        and isinstance(channel_name, str | None)
        and isinstance(fresh_until, int | float)
        and not isinstance(fresh_until, bool)
    ):
        raise ValueError("a cached key with fields of the wrong type")
    return CachedKey(
        key_id=key_id,
        state=KeyState(str(data.get("state"))),
        key_hash=None if key_hash is None else base64.b64decode(key_hash, validate=True),
        channel_id=channel_id,
        channel_name=channel_name,
        expires_at=None if expires_at is None else datetime.fromisoformat(expires_at),
        fresh_until=float(fresh_until),
    )


# Replace unless the stored entry is a tombstone and the new one is not.
_REPLACE_UNLESS_REVOKED = """
local current = redis.call('GET', KEYS[1])
if current and ARGV[3] ~= 'revoked' and string.find(current, '"state":"revoked"', 1, true) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class RedisKeyCache:
    """Cache-aside over the database; a tombstone beats a racing fill (SET NX)."""

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._malformed = LogThrottle()
        self._replace: Any = None
        self._gets = Coalescer(self._get_many)  # a storm's lookups in one MGET
        self._fills = Coalescer(self._fill_many)

    async def get(self, key_id: str) -> CachedKey | None:
        raw = await self._gets(key_id)
        if raw is None:
            return None
        try:
            return decode_cached_key(raw)
        except ValueError:  # not ours (another version?): a miss, the database decides
            self._malformed.log(log, logging.WARNING, "ignored a malformed key cache entry")
            return None

    async def _get_many(self, key_ids: Sequence[str]) -> list[bytes | str | None]:
        keys = [self._state.key("key", key_id) for key_id in key_ids]
        return list(await self._state.run(self._state.client.mget(keys)))

    async def fill(self, entry: CachedKey, ttl: float) -> bool:
        return await self._fills((entry, ttl))

    async def _fill_many(self, fills: Sequence[tuple[CachedKey, float]]) -> list[bool]:
        # Inside `async with`: a pipeline that a timeout cancels would keep its connection.
        async with self._state.client.pipeline(transaction=False) as pipe:
            for entry, ttl in fills:
                key = self._state.key("key", entry.key_id)
                pipe.set(key, encode_cached_key(entry), nx=True, px=_ms(ttl))
            return [bool(stored) for stored in await self._state.run(pipe.execute())]

    async def replace(self, entry: CachedKey, ttl: float) -> None:
        """Refresh an entry, but never turn a tombstone back into a valid key."""
        if self._replace is None:
            self._replace = self._state.client.register_script(_REPLACE_UNLESS_REVOKED)
        key = self._state.key("key", entry.key_id)
        await self._state.run(
            self._replace(keys=[key], args=[encode_cached_key(entry), _ms(ttl), entry.state.value])
        )

    async def tombstone(self, key_id: str, ttl: float, channel_id: int | None = None) -> None:
        entry = CachedKey(
            key_id, KeyState.REVOKED, channel_id=channel_id, fresh_until=time.time() + ttl
        )
        key = self._state.key("key", key_id)
        await self._state.run(self._state.client.set(key, encode_cached_key(entry), px=_ms(ttl)))


# --- Publish locks ---------------------------------------------------------------------------


def _lease_head(owner: str, node: str, token: int) -> str:
    return _head({"token": token, "owner": owner, "node": node}, "renewed_at")


def _decode_lease(channel_id: int, raw: bytes | str) -> Lease:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a lease is an object")
    token, owner, node = data.get("token"), data.get("owner"), data.get("node")
    renewed_at = data.get("renewed_at")
    if not (
        isinstance(token, int)
        and isinstance(owner, str)
        and isinstance(node, str)
        and isinstance(renewed_at, int | float)
    ):
        raise ValueError("a lease with fields of the wrong type")
    return Lease(channel_id, owner, token, node, float(renewed_at))


class RedisLocks:
    """One publisher per channel across nodes: a lease key with a TTL, changed by Lua only.

    Every change compares the exact fencing token inside Redis, so a node that was
    silent (GC pause, partition) can't release or renew a lease someone took over.
    """

    def __init__(self, state: RedisState, ttl: float = DEFAULT_LOCK_TTL) -> None:
        check_ttl(ttl)
        self.ttl = ttl
        self._state = state
        client = state.client
        self._acquire_all = client.register_script(_ACQUIRE_MANY)
        self._renew_all = client.register_script(_RENEW_MANY)
        self._release = client.register_script(_RELEASE)
        self._take_over = client.register_script(_TAKE_OVER)
        self._malformed = LogThrottle()
        self._acquisitions = Coalescer(self._acquire_many)
        self._renewals = Coalescer(self._renew_many)

    async def acquire(self, channel_id: int, owner: str, node: str, token: int) -> Lease | None:
        return await self._acquisitions((channel_id, _lease_head(owner, node, token)))

    async def _acquire_many(self, wanted: Sequence[tuple[int, str]]) -> list[Lease | None]:
        """A storm's acquisitions in one script call: each lock is still decided alone."""
        keys = [self._state.key("lock", channel_id) for channel_id, _ in wanted]
        args: list[str | int] = [_ms(self.ttl), *(head for _, head in wanted)]
        stored = await self._state.run(self._acquire_all(keys, args))
        return [
            self._lease(channel_id, raw)
            for (channel_id, _), raw in zip(wanted, stored, strict=True)
        ]

    async def renew(self, lease: Lease) -> Lease | None:
        stored = await self._renewals(lease)
        if stored is None or stored.token != lease.token:
            return None
        return stored

    async def _renew_many(self, leases: Sequence[Lease]) -> list[Lease | None]:
        """Every live publisher renews each second: a node's renewals in one script call."""
        keys = [self._state.key("lock", lease.channel_id) for lease in leases]
        args: list[str | int] = [_ms(self.ttl), *(lease.token for lease in leases)]
        stored = await self._state.run(self._renew_all(keys, args))
        return [self._renewed(lease, raw) for lease, raw in zip(leases, stored, strict=True)]

    def _renewed(self, lease: Lease, raw: Any) -> Lease | None:
        """A renewal's answer: Redis's time when renewed, else what it holds (JSON)."""
        if isinstance(raw, bytes) and raw[:1] != b"{":
            try:
                renewed_at = float(raw)
            except ValueError:
                pass  # not ours: read as a lease below, which fails and is logged
            else:
                return Lease(lease.channel_id, lease.owner, lease.token, lease.node, renewed_at)
        return self._lease(lease.channel_id, raw)

    async def release(self, lease: Lease) -> None:
        keys = [self._state.key("lock", lease.channel_id)]
        await self._state.run(self._release(keys, [lease.token]))

    async def take_over(self, stale: Lease, owner: str, node: str, token: int) -> Lease | None:
        check_successor(stale, token)
        keys = [self._state.key("lock", stale.channel_id)]
        args: list[str | int] = [stale.token, _lease_head(owner, node, token), _ms(self.ttl)]
        return self._lease(stale.channel_id, await self._state.run(self._take_over(keys, args)))

    async def holder(self, channel_id: int) -> Lease | None:
        raw = await self._state.run(self._state.client.get(self._state.key("lock", channel_id)))
        return self._lease(channel_id, raw)

    def _lease(self, channel_id: int, raw: Any) -> Lease | None:
        if raw is None:
            return None
        try:
            return _decode_lease(channel_id, raw)
        except ValueError:
            self._malformed.log(log, logging.WARNING, "ignored a malformed publish lease")
            return None


# --- Node registry ---------------------------------------------------------------------------


def _decode_node(raw: bytes | str) -> NodeInfo:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a node is an object")
    try:
        node = NodeInfo(**data)
    except TypeError:
        raise ValueError("a node with the wrong fields") from None
    if not (isinstance(node.node_id, str) and isinstance(node.capacity, int)):
        raise ValueError("a node with fields of the wrong type")
    return node


class RedisRegistry:
    """Each node a key with a TTL (heartbeat_at from Redis's clock) plus a set of ids."""

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self._heartbeat = state.client.register_script(_HEARTBEAT)
        self._prune = state.client.register_script(_PRUNE)
        self._malformed = LogThrottle()

    async def heartbeat(self, node: NodeInfo, ttl: float) -> None:
        fields = dataclasses.asdict(node)
        del fields["heartbeat_at"]
        keys = [self._state.key("node", node.node_id), self._state.key("nodes")]
        args: list[str | int] = [_head(fields, "heartbeat_at"), _ms(ttl), node.node_id]
        await self._state.run(self._heartbeat(keys, args))

    async def nodes(self) -> list[NodeInfo]:
        client, key = self._state.client, self._state.key
        members = await self._state.run(client.smembers(key("nodes")))
        ids = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
        if not ids:
            return []
        values = await self._state.run(client.mget([key("node", i) for i in ids]))
        gone = [node_id for node_id, raw in zip(ids, values, strict=True) if raw is None]
        if gone:
            keys = [key("nodes"), *(key("node", node_id) for node_id in gone)]
            await self._state.run(self._prune(keys, gone))
        found = []
        for raw in values:
            if raw is None:
                continue
            try:
                found.append(_decode_node(raw))
            except ValueError:
                self._malformed.log(log, logging.WARNING, "ignored a malformed node entry")
        return found

    async def remove(self, node_id: str) -> None:
        client, key = self._state.client, self._state.key
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(key("node", node_id))
            pipe.srem(key("nodes"), node_id)
            await self._state.run(pipe.execute())


# --- Thumbnails ------------------------------------------------------------------------------

_THUMBNAIL_TIME = struct.Struct(">d")


class RedisThumbnails:
    """One key per channel: the picture's time (8 bytes) then the JPEG, with a TTL."""

    def __init__(self, state: RedisState) -> None:
        self._state = state

    async def put(self, channel_id: int, thumbnail: Thumbnail, ttl: float) -> None:
        value = _THUMBNAIL_TIME.pack(thumbnail.at) + thumbnail.jpeg
        client = self._state.client
        await self._state.run(client.set(self._state.key("thumb", channel_id), value, px=_ms(ttl)))

    async def get(self, channel_id: int) -> Thumbnail | None:
        client = self._state.client
        raw = await self._state.run(client.get(self._state.key("thumb", channel_id)))
        if not isinstance(raw, bytes) or len(raw) <= _THUMBNAIL_TIME.size:
            return None
        (at,) = _THUMBNAIL_TIME.unpack_from(raw)
        return Thumbnail(raw[_THUMBNAIL_TIME.size :], at)


# --- Events ----------------------------------------------------------------------------------


class RedisBus:
    """Pub/Sub, heard by one reader task fanning out to local subscribers.

    Three channels: lifecycle events; statistics, each node's streams as one message
    a second (STATS_PER_MESSAGE streams at most), decoded only if a local subscriber
    wants them; and CONTROL_EVENTS, the only one a control-only bus (a process that
    runs nothing but ingest) subscribes to.

    The reader starts with the first subscription. When Redis goes away it
    reconnects with backoff (0.1 s doubling to 2 s) and resubscribes; subscribers
    keep iterating across the gap, but what was published meanwhile is lost (the
    database outbox is what makes lifecycle events reliable). A silent connection
    (no answer to a PING after PING_AFTER idle seconds) counts as lost too.
    """

    INITIAL_BACKOFF = 0.1
    MAX_BACKOFF = 2.0
    TICK = 1.0
    PING_AFTER = 5.0  # idle seconds before the reader checks the connection
    PING_ANSWER = 3.0  # seconds a PING may take before the connection counts as dead

    def __init__(
        self, state: RedisState, queue_size: int = DEFAULT_QUEUE_SIZE, *, control_only: bool = False
    ) -> None:
        self._state = state
        self.channel = state.key("events")
        self.stats_channel = state.key("stats")
        self.control_channel = state.key("control")
        # An ingest-only process acts on CONTROL_EVENTS alone: it does not even receive
        # the lifecycle events and statistics of every stream in the cluster.
        self.control_only = control_only
        self._fanout = FanOut(queue_size)
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()  # set while the reader is subscribed
        self._first_attempt = asyncio.Event()  # set once the reader's first try is over
        self._subscribed_before = False
        self._closed = False
        self._malformed = LogThrottle()
        # A storm's events in one pipeline, not a pooled connection each; one batch at a
        # time, so this process's messages reach Redis in the order they were published.
        self._messages = Coalescer(self._publish_many, in_flight=1)

    async def publish(self, event: BusEvent) -> None:
        if isinstance(event, StreamStats):
            await self.publish_stats([event])
            return
        data = _json(encode_event(event))
        channel = self.control_channel if isinstance(event, CONTROL_EVENTS) else self.channel
        await self._messages((channel, data))

    async def publish_stats(self, batch: Sequence[StreamStats]) -> None:
        for start in range(0, len(batch), STATS_PER_MESSAGE):
            part = batch[start : start + STATS_PER_MESSAGE]
            # orjson: at hundreds of streams a second, the stdlib's encoder here and its
            # decoder in the monitor cost more than the rest of the monitoring.
            data = orjson.dumps([encode_event(stats) for stats in part])
            await self._messages((self.stats_channel, data))

    def subscribe(self, *, stats: bool = False) -> InProcessSubscription:
        """Registered at once; the shared reader starts with the first subscription.

        On a control-only bus, the subscription hears CONTROL_EVENTS only.
        """
        if self.control_only and stats:
            raise RuntimeError("a control-only event bus hears no statistics")
        subscription = self._fanout.subscribe(stats=stats)
        if self._reader is None and not self._closed:
            self._reader = asyncio.get_running_loop().create_task(
                self._read(), name=f"redis-bus-reader {self.channel}"
            )
        return subscription

    @property
    def subscribed(self) -> bool:
        """Whether the reader is subscribed now (events published meanwhile are heard)."""
        return self._subscribed.is_set()

    async def ready(self) -> None:
        """Wait until the reader is subscribed (e.g. before another process publishes)."""
        if self._reader is None:
            raise RuntimeError("nobody subscribed to the bus yet")
        await self._subscribed.wait()

    def close(self) -> None:
        """End every subscription and stop the reader."""
        self._closed = True
        self._fanout.close()
        if self._reader is not None:
            self._reader.cancel()

    async def wait_closed(self) -> None:
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _publish_many(self, messages: Sequence[tuple[str, str | bytes]]) -> list[None]:
        await self._state.run(self._send(messages))
        return [None] * len(messages)

    async def _send(self, messages: Sequence[tuple[str, str | bytes]]) -> None:
        if self._reader is not None and not self._first_attempt.is_set():
            # The reader is still starting: wait, so this process's subscribers hear
            # what it publishes after subscribe(), as with the in-process bus. (Once
            # it failed, Redis is down: no waiting, the publish fails at once.)
            await self._first_attempt.wait()
        if len(messages) == 1:
            await self._state.client.publish(*messages[0])
            return
        # Inside `async with`: a pipeline that a timeout cancels would keep its connection.
        async with self._state.client.pipeline(transaction=False) as pipe:
            for channel, data in messages:
                pipe.publish(channel, data)
            await pipe.execute()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.INITIAL_BACKOFF
        lost_at: float | None = None
        while True:
            pubsub = self._state.client.pubsub()
            try:
                await self._subscribe(pubsub)
                self._subscribed.set()
                self._first_attempt.set()
                delay = self.INITIAL_BACKOFF
                if lost_at is not None:
                    log.info(
                        "event bus subscribed to %s%s after %.1f s",
                        self._state.where,
                        " again" if self._subscribed_before else "",
                        loop.time() - lost_at,
                    )
                    lost_at = None
                self._subscribed_before = True
                await self._listen(pubsub)
            except Exception as exc:
                self._subscribed.clear()
                self._first_attempt.set()
                if lost_at is None:
                    lost_at = loop.time()
                    if _lost(exc):
                        log.warning(
                            "event bus is not subscribed to %s (%s); retrying",
                            self._state.where,
                            type(exc).__name__,
                        )
                    else:  # a bug must not silence the bus for good
                        log.exception("event bus reader failed; retrying")
            finally:
                await _close_quietly(pubsub)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.MAX_BACKOFF)

    async def _subscribe(self, pubsub: PubSub) -> None:
        async with asyncio.timeout(self._state.timeout):
            channels = [self.control_channel]
            if not self.control_only:
                channels += [self.channel, self.stats_channel]
            await pubsub.subscribe(*channels)
            confirmed = 0
            while confirmed < len(channels):  # from here on, nothing published is missed
                message = await pubsub.get_message(timeout=self._state.timeout)
                if message is not None and message["type"] == "subscribe":
                    confirmed += 1

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self.TICK)
            now = loop.time()
            if message is not None:
                heard, pinged = now, False
                if message["type"] == "message":
                    self._deliver(message["channel"], message["data"])
            elif now - heard > self.PING_AFTER + self.PING_ANSWER:
                raise redis_errors.ConnectionError("no answer to PING")
            elif now - heard > self.PING_AFTER and not pinged:
                await pubsub.ping()
                pinged = True

    def _deliver(self, channel: Any, data: Any) -> None:
        stats = channel in (self.stats_channel, self.stats_channel.encode())
        if stats and not self._fanout.wants_stats:
            return
        try:
            if not isinstance(data, bytes | str) or len(data) > MAX_EVENT_BYTES:
                raise ValueError("not a bus event")
            decoded = orjson.loads(data)
            if stats:
                if not isinstance(decoded, list):
                    raise ValueError("statistics come in a list")
                batch = [decode_event(item, _STATS_ONLY) for item in decoded]
            else:
                event = decode_event(decoded)
        except Exception as exc:  # whatever is on the channel must not stop the reader
            self._malformed.log(
                log, logging.WARNING, "skipped a malformed bus message (%s)", type(exc).__name__
            )
            return
        if stats:
            self._fanout.deliver_stats(cast(list[StreamStats], batch))
        else:
            self._fanout.deliver(event)


async def _close_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    except Exception:  # the connection is already broken; nothing to release cleanly
        log.debug("closing a broken Pub/Sub connection failed", exc_info=True)
