"""Playback and download URLs that hold no stream key and stop working after a while.

The API signs ``play:<channel id>:<until>`` (a live stream) or
``recording:<path>:<until>`` (a recording's file, by its path on its node) for a
signed-in owner or admin; the ingest node that has it checks the signature with the
same server secret and nothing else (no database, no session). The secret used is
derived from the key HMAC secret, so a playback signature can never pass for a
stream key's HMAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from .server_secrets import ServerSecrets

_PURPOSE = b"stream-sync playback URL v1"


def _key(hmac_key: bytes) -> bytes:
    return hmac.new(hmac_key, _PURPOSE, hashlib.sha256).digest()


def _mac(hmac_key: bytes, channel_id: int, until: int) -> str:
    return _signed(hmac_key, f"play:{channel_id}:{until}")


def _signed(hmac_key: bytes, message: str) -> str:
    digest = hmac.new(_key(hmac_key), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(secrets: ServerSecrets, channel_id: int, until: int) -> str:
    """The signature for playing ``channel_id`` until ``until`` (epoch seconds)."""
    return _mac(secrets.hmac_key, channel_id, until)


def verify(secrets: ServerSecrets, channel_id: int, until: int, signature: str, now: float) -> bool:
    """Whether the signature is ours for this channel and has not run out."""
    if now > until or len(signature) != 43:
        return False
    return any(
        hmac.compare_digest(_mac(key, channel_id, until), signature) for key in secrets.hmac_keys
    )


def sign_download(secrets: ServerSecrets, path: str, until: int) -> str:
    """The signature for downloading the recording at ``path`` until ``until``."""
    return _signed(secrets.hmac_key, f"recording:{path}:{until}")


def verify_download(
    secrets: ServerSecrets, path: str, until: int, signature: str, now: float
) -> bool:
    if now > until or len(signature) != 43:
        return False
    message = f"recording:{path}:{until}"
    return any(hmac.compare_digest(_signed(key, message), signature) for key in secrets.hmac_keys)
