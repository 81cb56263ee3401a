"""The control plane's database: models, engines, migrations, retention and backup."""

from stream_sync.db.engine import (
    alembic_config,
    create_engine,
    current_revision,
    downgrade,
    head_revision,
    session_factory,
    sqlite_url,
    upgrade,
)
from stream_sync.db.models import (
    ApiToken,
    AuditEntry,
    AuthSession,
    Base,
    Channel,
    IngestServer,
    PublishSession,
    Role,
    StreamKey,
    User,
    UTCDateTime,
    utcnow,
)

__all__ = [
    "ApiToken",
    "AuditEntry",
    "AuthSession",
    "Base",
    "Channel",
    "IngestServer",
    "PublishSession",
    "Role",
    "StreamKey",
    "UTCDateTime",
    "User",
    "alembic_config",
    "create_engine",
    "current_revision",
    "downgrade",
    "head_revision",
    "session_factory",
    "sqlite_url",
    "upgrade",
    "utcnow",
]
