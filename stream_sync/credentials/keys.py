"""The stream key format: ``ssk_<key_id>_<secret>``.

The key id (12 base62 characters) is not secret: it finds the row without a scan
and may appear in logs and dashboards. The secret (43 base62 characters, about
256.03 bits from ``secrets``) is never stored in clear: the database keeps an
HMAC to check it and an AES-GCM ciphertext to reveal it to its owner.

Only ASCII letters, digits and underscores: nothing that a URL, FFmpeg's option
parser, OBS or a shell would treat specially, and a double click selects it all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass, field

BASE62_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
KEY_PREFIX = "ssk_"
KEY_ID_LENGTH = 12
SECRET_LENGTH = 43
KEY_LENGTH = len(KEY_PREFIX) + KEY_ID_LENGTH + 1 + SECRET_LENGTH
# Checked before any regex runs, so hostile input costs nothing.
MAX_PRESENTED_LENGTH = 128

_KEY_RE = re.compile(r"ssk_([0-9A-Za-z]{12})_[0-9A-Za-z]{43}")
# For redaction, any run of base62 after the key id is secret: a longer one is a key
# glued to other text, a shorter one a key cut short (a client's app name truncated
# for a log line still holds most of the secret).
_KEY_IN_TEXT_RE = re.compile(r"ssk_([0-9A-Za-z]{12})_[0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    key_id: str
    key: str = field(repr=False)


def base62_token(length: int) -> str:
    return "".join(secrets.choice(BASE62_ALPHABET) for _ in range(length))


def generate_key() -> GeneratedKey:
    key_id = base62_token(KEY_ID_LENGTH)
    return GeneratedKey(key_id=key_id, key=f"{KEY_PREFIX}{key_id}_{base62_token(SECRET_LENGTH)}")


def parse_key_id(text: str) -> str | None:
    """The key id if ``text`` is exactly a well-formed key, else None."""
    if len(text) > MAX_PRESENTED_LENGTH:
        return None
    # fullmatch, not "^...$": "$" would also accept a trailing newline.
    match = _KEY_RE.fullmatch(text)
    return match.group(1) if match else None


def key_hash(hmac_secret: bytes, key: str) -> bytes:
    return hmac.new(hmac_secret, key.encode("utf-8"), hashlib.sha256).digest()


def mask_key(key: str) -> str:
    """Enough to recognise a key in a list, never enough to use it."""
    key_id = parse_key_id(key)
    if key_id is None:
        return f"{KEY_PREFIX}***"
    return f"{KEY_PREFIX}{key_id}_…{key[-4:]}"


def redact(text: str) -> str:
    """Replace every key, whole or cut short, inside ``text`` with ``ssk_<key_id>_***``.

    A logging safety net; it also runs before client text is truncated for display.
    """
    if KEY_PREFIX not in text:
        return text
    return _KEY_IN_TEXT_RE.sub(lambda m: f"{KEY_PREFIX}{m.group(1)}_***", text)
