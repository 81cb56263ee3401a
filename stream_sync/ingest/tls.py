"""RTMPS: the TLS context of the ingest listener, and its certificate renewed in place.

OBS, FFmpeg and GStreamer speak RTMP inside TLS on a second port (1936 by default).
One `ssl.SSLContext` serves every connection. A renewed certificate (Let's Encrypt
every 60-90 days) must not cost a restart, which would drop every live stream:
`reload` loads the files again into the same context, so new handshakes get the new
certificate while the streams already running keep their sessions. The files are
tried on a scratch context first: a half-written or mismatched pair leaves the old
certificate in place, with one log line saying why.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

log = logging.getLogger("stream_sync.ingest")

# TLS 1.0 and 1.1 are broken and gone from every encoder people use.
MIN_VERSION = ssl.TLSVersion.TLSv1_2


class TlsError(Exception):
    """The certificate or key cannot be used; the message is one line for the operator."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context holding ``cert`` (PEM, chain after leaf) and its ``key``."""
    context = _new_context()
    _load(context, cert, key)
    return context


def reload(context: ssl.SSLContext, cert: Path, key: Path) -> bool:
    """Load the files again into ``context``; False (logged) if they do not load."""
    try:
        _load(_new_context(), cert, key)
        _load(context, cert, key)
    except TlsError as exc:
        log.error("TLS certificate not reloaded, the previous one stays: %s", exc)
        return False
    log.info("TLS certificate reloaded from %s", cert)
    return True


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSION
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def _load(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise TlsError(
            f"the certificate {cert} and key {key} do not load ({exc.reason or exc}): "
            "both must be PEM, and the key must be the certificate's"
        ) from None
    except OSError as exc:
        raise TlsError(
            f"cannot read {exc.filename or f'{cert} or {key}'}: {exc.strerror or exc}"
        ) from None
