"""Logging setup: one line per event, UTC timestamps, and a last line of defence for keys.

The code never formats a stream key into a message (it logs key ids). The
redaction filter is the safety net for what we don't control: a library's
exception text or a client-provided string that happens to contain a key.
"""

from __future__ import annotations

import logging
import sys
import time

from .accounts.api_tokens import redact_tokens
from .credentials.keys import redact as redact_keys


def redact(text: str) -> str:
    """Stream keys, API tokens and reset tokens, masked wherever they appear."""
    return redact_tokens(redact_keys(text))


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and redact(str(exc)) != str(exc):
            record.exc_info = None  # the traceback would repeat the key
            cleaned += f" ({type(exc).__name__}: {redact(str(exc))})"
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def configure(level: str = "info", *, tag: str | None = None) -> None:
    """Log lines to stderr; `tag` (a worker's node id) marks every line of this process.

    Ingest workers share their supervisor's stderr, so each of their lines says whose
    it is: `... INFO  [edge-w2] stream_sync.ingest: conn=c7 ...`.
    """
    handler = logging.StreamHandler(sys.stderr)
    origin = f"[{tag}] " if tag else ""
    handler.setFormatter(
        _UtcFormatter(f"%(asctime)s %(levelname)-5s {origin}%(name)s: %(message)s")
    )
    handler.addFilter(RedactKeys())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start/stop lines repeat ours
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
