"""The seams the ingest nodes and the control plane talk through.

Each protocol has an in-process engine (one `serve` process) and a Redis engine
(several nodes); the key cache and locks also have a database engine that takes
over while Redis is down. PostgreSQL stays the source of truth: lifecycle events
are committed to its outbox first and published here second (see state/outbox.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

# --- Key cache ---------------------------------------------------------------------------


class KeyState(StrEnum):
    VALID = "valid"
    UNKNOWN = "unknown"  # no such key id (or a wrong secret for it)
    REVOKED = "revoked"  # revoked, expired, or its owner disabled: never comes back


@dataclass(frozen=True, slots=True)
class CachedKey:
    """What a node needs to check a key without the database.

    The HMAC of the key is cached, not the key: the node verifies the presented key
    against it with the server secret, exactly as against the database row.
    """

    key_id: str
    state: KeyState
    key_hash: bytes | None = field(default=None, repr=False)  # set for VALID
    channel_id: int | None = None
    channel_name: str | None = None
    expires_at: datetime | None = None  # a rotated-out key stops being valid then
    fresh_until: float = 0.0  # epoch seconds; after it, recheck the database if it answers


class KeyCache(Protocol):
    async def get(self, key_id: str) -> CachedKey | None: ...

    async def fill(self, entry: CachedKey, ttl: float) -> bool:
        """Store entry only if nothing is cached for its key id (a miss's read-back).

        Returns False when something is there already, e.g. a tombstone written by a
        revocation that raced with this fill: the tombstone must win.
        """

    async def replace(self, entry: CachedKey, ttl: float) -> None:
        """Refresh an entry after the database confirmed it; a tombstone is never undone.

        A refresh that read the database just before a revocation committed must not
        turn the revocation's tombstone back into a valid key.
        """

    async def tombstone(self, key_id: str, ttl: float, channel_id: int | None = None) -> None:
        """Mark a key id revoked, overwriting whatever is cached."""


# --- Publish locks -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to publish a channel. A newer holder always has a larger token."""

    channel_id: int
    owner: str  # "<node>/<connection>"
    token: int
    node: str = ""
    renewed_at: float = 0.0  # epoch seconds of the last renewal (media flowing)


class PublishLocks(Protocol):
    async def acquire(self, channel_id: int, owner: str, node: str, token: int) -> Lease | None:
        """The lease, or None while someone else holds the channel."""

    async def renew(self, lease: Lease) -> Lease | None:
        """Extend the TTL; None if the lease is gone or a newer token holds the channel."""

    async def release(self, lease: Lease) -> None:
        """Compare-and-delete: only the holder of this token releases."""

    async def take_over(self, stale: Lease, owner: str, node: str, token: int) -> Lease | None:
        """Move the channel from exactly the stale lease to a new holder (compare-and-swap)."""

    async def holder(self, channel_id: int) -> Lease | None: ...


class FencingTokens(Protocol):
    async def next_token(self) -> int:
        """A number larger than every token issued before, surviving restarts of Redis."""


# --- Node registry ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str  # one ingest process: the server name, or `<server>-w<i>` for a worker
    rtmp_url: str  # the server's URL: every worker of a server has the same
    capacity: int  # publishers
    capacity_mbps: float  # 0 = unlimited
    publishers: int = 0
    mbps: float = 0.0  # media in, and out (pushes, recordings): what capacity_mbps bounds
    draining: bool = False
    heartbeat_at: float = 0.0  # epoch seconds
    server: str = ""  # the ingest server name; empty (older nodes): the node id
    guard: dict[str, int] = field(default_factory=dict)  # abuse refusals by reason (guard.py)
    playback_url: str = ""  # http(s)://host:port its streams play from; empty: none

    @property
    def server_name(self) -> str:
        return self.server or self.node_id

    @property
    def has_room(self) -> bool:
        if self.draining or self.publishers >= self.capacity:
            return False
        return not self.capacity_mbps or self.mbps < self.capacity_mbps


class NodeRegistry(Protocol):
    async def heartbeat(self, node: NodeInfo, ttl: float) -> None:
        """Register or refresh; a node that stops calling disappears after ttl."""

    async def nodes(self) -> list[NodeInfo]: ...

    async def remove(self, node_id: str) -> None: ...


# --- Thumbnails -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A live stream's latest picture (monitor/thumbnail.py), for its dashboards."""

    jpeg: bytes = field(repr=False)
    at: float  # epoch seconds of the keyframe's arrival


class ThumbnailStore(Protocol):
    """Best effort: the ingest node holding a stream puts, the API gets; entries expire."""

    async def put(self, channel_id: int, thumbnail: Thumbnail, ttl: float) -> None: ...

    async def get(self, channel_id: int) -> Thumbnail | None: ...


# --- Events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BusEvent:
    pass


@dataclass(frozen=True, slots=True)
class KeyRevoked(BusEvent):
    """A key stopped being valid; whoever publishes with it must be stopped."""

    channel_id: int
    key_id: str


@dataclass(frozen=True, slots=True)
class PublishStarted(BusEvent):
    channel_id: int
    key_id: str
    connection_id: str
    session_id: int | None  # the publish_sessions row, None if it could not be written
    node: str = ""
    seq: int = 0  # per-channel sequence number from the outbox; 0 if not recorded


@dataclass(frozen=True, slots=True)
class PublishEnded(BusEvent):
    channel_id: int
    key_id: str
    connection_id: str
    session_id: int | None
    reason: str
    media_bytes: int
    video_frames: int
    audio_frames: int
    video_codec: str | None  # FourCC from the last sequence start, e.g. "avc1", "hvc1"
    audio_codec: str | None
    node: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class PublishRefused(BusEvent):
    channel_id: int | None
    key_id: str | None
    reason: str
    address: str
    node: str = ""


@dataclass(frozen=True, slots=True)
class StopRequested(BusEvent):
    """Stop a channel's live publish: an admin kick (the key stays valid), or a takeover.

    With before_token set, only a publisher holding an older lease stops: the one
    that took over keeps going.
    """

    channel_id: int
    reason: str = "kicked"
    before_token: int | None = None


@dataclass(frozen=True, slots=True)
class DrainRequested(BusEvent):
    """Stop admitting on a node, move capable publishers, close the rest by the deadline."""

    node: str
    deadline: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class NodeUp(BusEvent):
    node: str


@dataclass(frozen=True, slots=True)
class NodeLost(BusEvent):
    node: str


@dataclass(frozen=True, slots=True)
class StreamStats(BusEvent):
    """Periodic, best effort: what a live stream's counters say now."""

    channel_id: int
    session_id: int | None
    node: str
    at: float
    counters: dict[str, int]
    codecs: dict[str, str] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)  # the meter's snapshot
    health: dict[str, Any] = field(default_factory=dict)  # overall and issues
    thumbnail_at: float | None = None  # epoch seconds of the stored picture, if any
    outputs: list[dict[str, Any]] = field(default_factory=list)  # pushes and recording


@dataclass(frozen=True, slots=True)
class StatusChanged(BusEvent):
    """A channel's monitor status changed (monitor/status.py): what dashboards show.

    Staged in the outbox with the change, so ``seq`` orders it among the channel's
    other lifecycle events; consumers keep the one with the highest ``seq``.
    """

    channel_id: int
    status: str  # offline, live, reconnecting, testing
    session_id: int | None
    at: float  # epoch seconds of the change
    grace_until: float | None = None  # set while reconnecting
    reason: str | None = None  # why it changed (e.g. "stopped", "grace expired")
    node: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class StreamKeyReset(BusEvent):
    """A channel's keys were reset: ``key_id`` is the new key, the others were revoked.

    Outbox only (webhooks' ``key.reset``): live publishers are stopped by the
    `KeyRevoked` events staged beside it, which older nodes understand.
    """

    channel_id: int
    key_id: str
    revoked_key_ids: list[str] = field(default_factory=list)
    seq: int = 0


@dataclass(frozen=True, slots=True)
class PublishRefusalsCounted(BusEvent):
    """Refused publishes of a known channel's key in one minute, from one address.

    Outbox only, staged with the aggregated audit row (audit/refusals.py) for
    webhooks' ``publish.refused``: one per key id, address and reason per minute.
    """

    channel_id: int
    key_id: str | None
    address: str
    reason: str
    count: int
    minute: float  # epoch seconds of the minute's start
    seq: int = 0


@dataclass(frozen=True, slots=True)
class HealthChanged(BusEvent):
    """A live stream's overall health (monitor/health.py) settled on a new value.

    Outbox only (webhooks' ``stream.health_changed``), staged by the monitor role
    from the stream statistics once a new value has held for a while, so a
    stream hovering at a threshold does not announce every flip.
    """

    channel_id: int
    session_id: int | None
    overall: str  # good, ok, bad, no_data
    previous: str | None  # None: the first value this session
    issues: list[str] = field(default_factory=list)  # issue codes, errors first
    at: float = 0.0  # epoch seconds
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ThumbnailsWanted(BusEvent):
    """Dashboards show these channels now: their thumbnails come every few seconds.

    The API repeats it while the pages stay open; a node forgets it after ``until``.
    """

    channel_ids: list[int]
    until: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class OutputsChanged(BusEvent):
    """A channel's push targets or record switch changed: the node holding it reloads them."""

    channel_id: int


@dataclass(frozen=True, slots=True)
class RecordingDeleted(BusEvent):
    """A recording's row was deleted: the node that wrote its file deletes the file."""

    node: str
    path: str  # relative to that node's recordings folder


class Subscription(Protocol):
    def __aiter__(self) -> Subscription: ...

    async def __anext__(self) -> BusEvent: ...

    def close(self) -> None: ...


class EventBus(Protocol):
    async def publish(self, event: BusEvent) -> None: ...

    async def publish_stats(self, batch: Sequence[StreamStats]) -> None:
        """One node's periodic statistics, all streams at once (one message, not one each)."""

    def subscribe(self, *, stats: bool = False) -> Subscription:
        """Events published after this call, in order, until close().

        StreamStats only with ``stats``: they are most of the bus's traffic, and only
        the live views want them.
        """


# What ingest nodes act on; on Redis they travel on a channel of their own, so a node
# that runs nothing but ingest need not hear the lifecycle of every stream.
CONTROL_EVENTS = (
    KeyRevoked,
    StopRequested,
    DrainRequested,
    ThumbnailsWanted,
    OutputsChanged,
    RecordingDeleted,
)
