"""What the HTTP API needs from the process that runs it; passed in, never imported."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..accounts.throttle import LoginThrottle
from ..credentials.server_secrets import ServerSecrets
from ..ingest.playback import PlaybackHub
from ..operations import ControlPlane
from ..settings import Settings
from ..state.interfaces import NodeInfo, ThumbnailStore
from .ratelimit import RequestLimiter
from .watch import ChannelWatchers


@dataclass(frozen=True, slots=True)
class LiveStream:
    """A publisher that is live right now on this node."""

    channel_id: int
    key_id: str
    connection: str
    peer: str
    uptime: float
    codecs: dict[str, str]
    counters: dict[str, int]
    bytes_in: int
    measurements: dict[str, Any] = field(default_factory=dict)  # the meter's snapshot
    health: dict[str, Any] = field(default_factory=dict)
    last_update: float = 0.0  # epoch seconds of the last statistics
    thumbnail_at: float | None = None  # epoch seconds of the stream's latest picture
    outputs: list[dict[str, Any]] = field(default_factory=list)  # pushes and recording

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "connection": self.connection,
            "peer": self.peer,
            "uptime": round(self.uptime, 3),
            "codecs": self.codecs,
            "counters": self.counters,
            "bytes_in": self.bytes_in,
            "measurements": self.measurements,
            "health": self.health,
            "last_update": self.last_update,
            "thumbnail_at": self.thumbnail_at,
            "outputs": self.outputs,
        }


class LiveView(Protocol):
    refusals: dict[str, int]  # refused publishes by reason, as heard on the bus
    watchers: ChannelWatchers  # open dashboards, fed from the bus

    def live_streams(self) -> dict[int, LiveStream]:
        """Live publishers by channel id."""

    def default_rtmp_url(self) -> str:
        """The server URL for channels not mapped to a configured ingest server."""

    def default_rtmps_url(self) -> str | None:
        """Its RTMPS counterpart, when RTMPS is on."""

    def thumbnail_seen(self, channel_id: int) -> None:
        """Someone looks at the channel's live picture: have it refreshed often."""


@dataclass
class ApiContext:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    secrets: ServerSecrets
    control: ControlPlane
    live: LiveView
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    requests: RequestLimiter = field(default_factory=RequestLimiter)  # per address, all routes
    # Extra dependencies for /readyz, e.g. {"redis": "ok"}; the database is always checked.
    dependencies: Callable[[], Awaitable[dict[str, str]]] | None = None
    # The cluster's ingest nodes (for /metrics); None where no registry is known.
    nodes: Callable[[], Awaitable[list[NodeInfo]]] | None = None
    # Live streams' pictures, put there by the ingest nodes; None: no pictures here.
    thumbnails: ThumbnailStore | None = None
    # This process's own live streams, when it runs ingest too: they play from here.
    playback: PlaybackHub | None = None

    def cookie_secure(self, *, https: bool) -> bool:
        """Whether the session cookie is Secure, for a request that came over ``https``.

        The setting decides when given; otherwise Secure whenever the browser speaks
        HTTPS to us (here, or to a trusted proxy in front) or the public URL says
        rtmps://, so the cookie never travels in clear text where TLS was meant.
        """
        if self.settings.cookie_secure is not None:
            return self.settings.cookie_secure
        return https or (self.settings.public_url or "").startswith("rtmps://")
