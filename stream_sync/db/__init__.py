"""The credential store's database: models, engines and migrations."""

from stream_sync.db.engine import (
    alembic_config,
    create_engine,
    session_factory,
    sqlite_url,
    upgrade,
)
from stream_sync.db.models import Base, Channel, StreamKey, UTCDateTime, utcnow

__all__ = [
    "Base",
    "Channel",
    "StreamKey",
    "UTCDateTime",
    "alembic_config",
    "create_engine",
    "session_factory",
    "sqlite_url",
    "upgrade",
    "utcnow",
]
