"""What the connection tells the application: frozen, past-tense events.

Media is the exception: at thousands of messages a second per process the core
does not make an event per frame. It bumps `MediaCounters` instead, and emits
events only for what changes rarely (codec configuration, metadata) or when the
application asked for payloads (`collect_media`).
Fields that may hold a stream key are excluded from repr, so logging an event
never leaks one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .flv import MediaPacket


@dataclass(frozen=True, slots=True)
class Event:
    pass


@dataclass(frozen=True, slots=True)
class HandshakeCompleted(Event):
    digest_scheme: int | None  # None: plain handshake (librtmp, OBS, GStreamer)


@dataclass(frozen=True, slots=True)
class ConnectRequested(Event):
    """The client sent connect; answer with accept_connect() or reject_connect()."""

    transaction_id: float
    app: str
    tc_url: str = field(repr=False)  # a misconfigured encoder may put its key here
    flash_version: str
    object_encoding: int
    fourcc_list: tuple[str, ...]
    caps_ex: int
    properties: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class PublishRequested(Event):
    """The client asked to publish; answer with accept_publish() or reject_publish()."""

    stream_id: int
    name: str = field(repr=False)  # the stream key
    publish_type: str


@dataclass(frozen=True, slots=True)
class PublishStopped(Event):
    """The client ended its publish (FCUnpublish, deleteStream or closeStream)."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class MetadataReceived(Event):
    """onMetaData (usually via @setDataFrame); encoders resend it, sometimes dozens of times."""

    stream_id: int
    timestamp: int
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CodecConfigured(Event):
    """A sequence start: the codec configuration record of one track."""

    stream_id: int
    timestamp: int
    media: str  # "video" or "audio"
    packet: MediaPacket
    payload: bytes = field(default=b"", repr=False)  # the whole message: an FLV tag's body


@dataclass(frozen=True, slots=True)
class MediaReceived(Event):
    """A whole media message; only emitted when the application set collect_media."""

    stream_id: int
    message_type: int  # 8 audio, 9 video
    timestamp: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyframeCaptured(Event):
    """The video keyframe asked for with capture_keyframe (track 0), whole, once."""

    stream_id: int
    timestamp: int
    packet: MediaPacket


@dataclass(frozen=True, slots=True)
class CommandIgnored(Event):
    """A command the server does not implement; answered with _error when it expected one."""

    name: str
    stream_id: int
