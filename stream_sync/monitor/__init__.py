"""What happened on the ingest side, kept for dashboards: publish session history."""

from stream_sync.monitor.history import (
    SessionView,
    close_open_sessions,
    end_session,
    list_sessions,
    start_session,
)

__all__ = ["SessionView", "close_open_sessions", "end_session", "list_sessions", "start_session"]
