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
from .webhooks.endpoints import redact_secrets

# uvicorn.error's start/stop lines repeat ours; the others' INFO lines are noise, and
# httpx's name every webhook URL in full (a URL may hold the receiver's token).
QUIET_LOGGERS = ("uvicorn.access", "uvicorn.error", "aiosqlite", "alembic", "httpx", "httpcore")


def redact(text: str) -> str:
    """Stream keys, API tokens, reset tokens and webhook secrets, masked wherever they appear."""
    return redact_secrets(redact_tokens(redact_keys(text)))


class RedactKeys(logging.Filter):
    """Masks keys and tokens in the message and in the whole traceback.

    The traceback is formatted here, redacted, and left for the formatter to use: an
    exception's own text may be clean while the one it was raised from holds a key.
    """

    _tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(self._tracebacks.formatException(record.exc_info))
        return True


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def set_levels(level: str) -> None:
    """The levels a server logs at; the tests' leak scan sets the same to see what it writes."""
    logging.getLogger().setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


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
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    set_levels(level)
