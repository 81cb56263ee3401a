"""The control plane's schema, as typed SQLAlchemy models.

Everything here must stay portable to PostgreSQL: the engine is chosen by URL, so
no SQLite-only SQL. The hand-written migrations mirror these models exactly; a
test compares them so the two cannot drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Explicit names keep migrations deterministic across backends (and let batch
# mode on SQLite find the constraints it has to recreate).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CHANNEL_NAME_MAX = 64
EMAIL_MAX = 254


def utcnow() -> datetime:
    """The one clock of the store: aware, UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always hands back aware datetimes.

    SQLite has no time zone type and returns naive values; PostgreSQL's
    ``timestamptz`` keeps the instant. Refusing naive input stops local times from
    being stored as if they were UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetimes are refused; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Role(StrEnum):
    ADMIN = "admin"
    STREAMER = "streamer"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'streamer')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX), unique=True)  # stored lowercase
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, PHC string
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # An admin-started password reset: the hash of a one-time token, until it expires.
    reset_token_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    reset_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuthSession(Base):
    """A signed-in browser. The cookie holds a random token; only its hash is stored."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    source_address: Mapped[str | None] = mapped_column(String(64))


class ApiToken(Base):
    """A token for scripts: `sst_<token id>_<secret>`, looked up by id, checked by hash."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class IngestServer(Base):
    """The operator's configuration of an ingest server; its live load is in the state layer."""

    __tablename__ = "ingest_servers"
    __table_args__ = (CheckConstraint("capacity >= 0", name="capacity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    rtmp_url: Mapped[str] = mapped_column(String(255))
    region: Mapped[str | None] = mapped_column(String(64))
    capacity: Mapped[int] = mapped_column(Integer, default=100)  # publishers
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Channel(Base):
    __tablename__ = "channels"
    # Never reuse a deleted channel's id on SQLite (PostgreSQL sequences never do):
    # consumers tell events apart by (channel_id, seq), and seq restarts per channel.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Shown in URLs and dashboards; never a secret.
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(CHANNEL_NAME_MAX), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # NULL until an owner exists (channels made before the first admin); admins see all.
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # The channel-to-ingest mapping: a preference unless enforcement is configured.
    ingest_server_id: Mapped[int | None] = mapped_column(
        ForeignKey("ingest_servers.id", ondelete="SET NULL"), index=True
    )
    # The last lifecycle event's sequence number (see state/outbox.py). Incrementing
    # it locks the row, so a channel's events get gapless numbers in commit order.
    event_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # Seconds a dropped stream may reconnect into the same session; NULL: the default.
    grace_seconds: Mapped[int | None] = mapped_column(Integer)
    # Measured like any stream, shown as "testing", never announced as live.
    test_mode: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # Write each session to disk (ingest/recording.py); the owner turns it on.
    record: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class StreamKey(Base):
    """One issued key. Revoked and expired rows stay, so they are told apart from typos."""

    __tablename__ = "stream_keys"
    __table_args__ = (
        # At most one key per channel without an expiry, enforced by the database so
        # two concurrent resets cannot both win. A rotated-out key gets an expiry
        # and keeps working until then, beside the new one.
        Index(
            "uq_stream_keys_channel_id_current",
            "channel_id",
            unique=True,
            sqlite_where=text("revoked_at IS NULL AND expires_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL AND expires_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="CASCADE"), index=True
    )
    # HMAC-SHA256 of the whole key under the server's HMAC secret.
    key_hash: Mapped[bytes] = mapped_column(LargeBinary)
    # AES-GCM of the key, so its owner can reveal it again (see credentials.crypto).
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PublishSession(Base):
    """One session of a channel: from the first accepted publish to going offline.

    Reconnects within the grace period continue the same row, so counters add up
    across the publishes of one session. The status machine's state lives here too
    (status, grace, pending reason), so whichever process applies the next transition
    (the ingest node, or the monitor after a node loss) starts from the truth.
    """

    __tablename__ = "publish_sessions"
    __table_args__ = (
        # At most one open session per channel, enforced by the database.
        Index(
            "uq_publish_sessions_channel_id_open",
            "channel_id",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="CASCADE"), index=True
    )
    key_id: Mapped[str] = mapped_column(String(32))
    node: Mapped[str] = mapped_column(String(64))
    remote_address: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[str | None] = mapped_column(String(128))
    media_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    video_frames: Mapped[int] = mapped_column(BigInteger, default=0)
    audio_frames: Mapped[int] = mapped_column(BigInteger, default=0)
    video_codec: Mapped[str | None] = mapped_column(String(16))
    audio_codec: Mapped[str | None] = mapped_column(String(16))
    # The publish lock's fencing token when the session started: a newer holder of
    # the channel always has a larger one.
    fencing_token: Mapped[int | None] = mapped_column(BigInteger)
    # The status machine's state (monitor/status.py).
    status: Mapped[str] = mapped_column(String(16), default="offline", server_default="offline")
    test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    publishing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    media: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    grace_until: Mapped[float | None] = mapped_column(Float)  # epoch seconds
    pending_reason: Mapped[str | None] = mapped_column(String(32))
    status_since: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    publishes: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # What the session looked like, for history.
    encoder: Mapped[str | None] = mapped_column(String(128))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    fps: Mapped[float | None] = mapped_column(Float)
    avg_kbps: Mapped[float | None] = mapped_column(Float)
    peak_kbps: Mapped[float | None] = mapped_column(Float)
    health_issues: Mapped[list[str] | None] = mapped_column(JSON)  # codes seen
    last_update_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """Append-only: rows are inserted and, past retention, deleted; never updated.

    Refused publishes arrive aggregated: one row per key id, address and reason per
    minute, with `count`.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(64))
    actor_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    actor: Mapped[str] = mapped_column(String(EMAIL_MAX))  # email, "cli", "system", ...
    channel_id: Mapped[int | None] = mapped_column(
        ForeignKey("channels.id", ondelete="SET NULL"), index=True
    )
    key_id: Mapped[str | None] = mapped_column(String(32))
    source_address: Mapped[str | None] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer, default=1)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class OutboxEvent(Base):
    """A lifecycle event, committed with the change it describes, then put on the bus.

    Consumers that restart (or a Redis that restarted empty) catch up from here. The
    payload is the whole event (``state.codec``); ``channel_id`` is nulled when the
    channel is deleted, the payload keeps it. ``seq`` numbers a channel's events.
    """

    __tablename__ = "event_outbox"
    __table_args__ = (
        UniqueConstraint("channel_id", "seq"),
        # Ids are cursors: SQLite must not hand out an id again after retention
        # emptied the table.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    type: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id", ondelete="SET NULL"))
    seq: Mapped[int | None] = mapped_column(BigInteger)  # NULL for events of no channel
    node: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class Counter(Base):
    """Numbers that must keep growing across restarts of everything but the database.

    ``fencing``: the publish locks' fencing tokens (a Redis counter would restart).
    """

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class PublishLock(Base):
    """The one-publisher lock while Redis is down; times are epoch seconds, like Redis TTLs."""

    __tablename__ = "publish_locks"

    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    owner: Mapped[str] = mapped_column(String(128))
    node: Mapped[str] = mapped_column(String(64))
    token: Mapped[int] = mapped_column(BigInteger)
    renewed_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class ConsumerCursor(Base):
    """How far a named outbox consumer got (the last outbox id it handled)."""

    __tablename__ = "consumer_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookEndpoint(Base):
    """Where webhooks go: a URL, the secret deliveries are signed with, the events wanted."""

    __tablename__ = "webhook_endpoints"
    # Never reuse an id on SQLite: it is the secret's associated data and names the
    # endpoint in the delivery log.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(128))
    # AES-GCM of the signing secret under the server's encryption key, the way stream
    # keys are kept (credentials.crypto), with "webhook:<id>" as associated data.
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    events: Mapped[list[str]] = mapped_column(JSON)  # webhook event types, e.g. stream.live
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(Base):
    """One event for one endpoint, and how sending it went: the delivery log.

    Created by the fan-out from an outbox row (one per endpoint and row, so reading
    a row twice creates nothing), sent until delivered or ``give_up_at``. ``body``
    is the exact JSON sent, so every attempt signs and sends the same bytes.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
        UniqueConstraint("endpoint_id", "outbox_id"),
        # The sender's question: which pending deliveries are due.
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    outbox_id: Mapped[int] = mapped_column(BigInteger)  # no foreign key: retention purges those
    event_id: Mapped[str] = mapped_column(String(36), index=True)  # a UUID, the same per endpoint
    type: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[int | None] = mapped_column(Integer)  # kept after the channel is deleted
    seq: Mapped[int | None] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    give_up_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer)  # the HTTP status, if any
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PushTarget(Base):
    """Where a channel's live stream is relayed: a platform's ingest URL and its key."""

    __tablename__ = "push_targets"
    # Never reuse an id on SQLite: it is the key's associated data and names the
    # target in the dashboard's live state.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))  # "YouTube", "Twitch", "origin"
    # rtmp[s]://host[:port]/app: shown to the owner; the stream key is kept apart.
    url: Mapped[str] = mapped_column(String(1024))
    # AES-GCM of the platform's stream key under the server's encryption key, like
    # our own keys (credentials.crypto), with "push:<id>" as associated data.
    key_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    key_hint: Mapped[str] = mapped_column(String(8))  # its last characters, to tell keys apart
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Recording(Base):
    """One file of a recorded session, on the disk of the node that wrote it.

    A session longer than the size or duration limit is written as several parts.
    Rows outlive their sessions' rows (no foreign key) and go with their files.
    """

    __tablename__ = "recordings"
    __table_args__ = (
        CheckConstraint("status IN ('recording', 'complete', 'failed')", name="status"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[int | None] = mapped_column(BigInteger)
    node: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512))  # relative to the node's recordings folder
    part: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="recording")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    end_reason: Mapped[str | None] = mapped_column(String(128))
