"""Reversible storage of stream keys, so owners can reveal theirs again.

Layout: version byte ``0x01`` || 12-byte random nonce || AES-256-GCM ciphertext
and tag. The key id is the associated data, so a ciphertext copied onto another
row fails to decrypt instead of revealing the wrong key. Random 96-bit nonces are
safe far beyond the number of keys a server will ever issue.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stream_sync.credentials.errors import KeyDecryptionError

FORMAT_VERSION = 0x01
NONCE_BYTES = 12
TAG_BYTES = 16


def encrypt_key(encryption_key: bytes, *, key_id: str, key: str) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(encryption_key).encrypt(nonce, key.encode("utf-8"), key_id.encode("utf-8"))
    return bytes([FORMAT_VERSION]) + nonce + sealed


def decrypt_any(encryption_keys: Iterable[bytes], *, key_id: str, blob: bytes) -> str:
    """`decrypt_key` with each key in turn (the current secret generation, then older
    ones during a rotation); the last one's KeyDecryptionError if none fits."""
    error: KeyDecryptionError | None = None
    for encryption_key in encryption_keys:
        try:
            return decrypt_key(encryption_key, key_id=key_id, blob=blob)
        except KeyDecryptionError as exc:
            error = exc
    raise error or KeyDecryptionError("no encryption key to decrypt the stored key with")


def decrypt_key(encryption_key: bytes, *, key_id: str, blob: bytes) -> str:
    if len(blob) < 1 + NONCE_BYTES + TAG_BYTES or blob[0] != FORMAT_VERSION:
        raise KeyDecryptionError("the stored key has an unknown format")
    nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        plain = AESGCM(encryption_key).decrypt(nonce, sealed, key_id.encode("utf-8"))
        return plain.decode("utf-8")
    except (InvalidTag, UnicodeDecodeError):
        raise KeyDecryptionError(
            "the stored key cannot be decrypted: the server's encryption key has changed "
            "or the record is damaged; reset the key to issue a new one"
        ) from None
