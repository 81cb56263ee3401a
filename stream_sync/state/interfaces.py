"""The seams the ingest node and the control plane talk through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to publish a channel; the fencing token grows with every new holder."""

    channel_id: int
    owner: str
    token: int


class PublishLocks(Protocol):
    async def acquire(self, channel_id: int, owner: str) -> Lease | None:
        """The lease, or None when another owner holds the channel."""

    async def release(self, lease: Lease) -> None:
        """Release only if lease is still the current one (compare-and-delete)."""

    async def holder(self, channel_id: int) -> Lease | None: ...


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


class Subscription(Protocol):
    def __aiter__(self) -> Subscription: ...

    async def __anext__(self) -> BusEvent: ...

    def close(self) -> None: ...


class EventBus(Protocol):
    async def publish(self, event: BusEvent) -> None: ...

    def subscribe(self) -> Subscription:
        """Events published after this call, in order, until close()."""
