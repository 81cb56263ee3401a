"""Webhook signatures: HMAC-SHA256 over ``f"{t}.{body}"``, in Stripe's header format.

``Stream-Sync-Signature: t=<unix seconds>,v1=<hex>``. The timestamp is signed with
the body, so a captured delivery cannot be replayed later than the receiver's
tolerance; ``v1`` names the scheme, so a second scheme (or a second signature
during a secret change) can be added without breaking receivers. Pure: the
caller passes the time.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["HEADER", "SCHEME", "TOLERANCE", "InvalidSignature", "sign", "signature", "verify"]

HEADER = "Stream-Sync-Signature"
SCHEME = "v1"
TOLERANCE = 300.0  # seconds a receiver accepts between the signed time and its clock
_MAX_HEADER = 4096


class InvalidSignature(Exception):
    """The header is missing, malformed, stale, or no signature in it matches."""


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value for a delivery sent at ``timestamp`` (whole unix seconds)."""
    return f"t={timestamp},{SCHEME}={signature(secret, body, timestamp)}"


def verify(
    secret: str, body: bytes, header: str, *, now: float, tolerance: float = TOLERANCE
) -> int:
    """Check a header as a receiver does; returns the signed timestamp.

    Every ``v1`` entry is compared in constant time, so a header may carry several.
    Raises `InvalidSignature` otherwise, with a reason safe to log.
    """
    if not header or len(header) > _MAX_HEADER:
        raise InvalidSignature("no signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif name == SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise InvalidSignature("the header has no timestamp or no v1 signature")
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature("the signed timestamp is outside the tolerance")
    expected = signature(secret, body, timestamp)
    matched = False
    for candidate in candidates:  # every one compared: the time taken reveals nothing
        matched |= hmac.compare_digest(expected.encode(), candidate.encode("ascii", "replace"))
    if not matched:
        raise InvalidSignature("no signature matches")
    return timestamp
