from __future__ import annotations

import os

import pytest

from stream_sync.credentials import KeyDecryptionError, decrypt_key, encrypt_key, generate_key

ENCRYPTION_KEY = os.urandom(32)


def test_round_trip_and_layout() -> None:
    generated = generate_key()
    blob = encrypt_key(ENCRYPTION_KEY, key_id=generated.key_id, key=generated.key)
    assert blob[0] == 0x01
    assert len(blob) == 1 + 12 + len(generated.key) + 16
    assert generated.key.encode() not in blob
    assert decrypt_key(ENCRYPTION_KEY, key_id=generated.key_id, blob=blob) == generated.key


def test_nonces_are_fresh() -> None:
    generated = generate_key()
    blobs = {
        encrypt_key(ENCRYPTION_KEY, key_id=generated.key_id, key=generated.key) for _ in range(50)
    }
    assert len({blob[1:13] for blob in blobs}) == 50


def test_ciphertext_is_bound_to_its_key_id() -> None:
    generated, other = generate_key(), generate_key()
    blob = encrypt_key(ENCRYPTION_KEY, key_id=generated.key_id, key=generated.key)
    with pytest.raises(KeyDecryptionError) as caught:
        decrypt_key(ENCRYPTION_KEY, key_id=other.key_id, blob=blob)
    assert caught.value.code == "key_decryption_failed"
    assert generated.key not in str(caught.value)


def test_wrong_encryption_key_fails() -> None:
    generated = generate_key()
    blob = encrypt_key(ENCRYPTION_KEY, key_id=generated.key_id, key=generated.key)
    with pytest.raises(KeyDecryptionError):
        decrypt_key(os.urandom(32), key_id=generated.key_id, blob=blob)


@pytest.mark.parametrize("position", [1, 12, 13, 40, -1])
def test_any_flipped_bit_fails(position: int) -> None:
    generated = generate_key()
    blob = bytearray(encrypt_key(ENCRYPTION_KEY, key_id=generated.key_id, key=generated.key))
    blob[position] ^= 0x01
    with pytest.raises(KeyDecryptionError):
        decrypt_key(ENCRYPTION_KEY, key_id=generated.key_id, blob=bytes(blob))


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x01" + bytes(28), b"\x02" + bytes(80)])
def test_unknown_version_or_truncated_blob_fails(blob: bytes) -> None:
    with pytest.raises(KeyDecryptionError):
        decrypt_key(ENCRYPTION_KEY, key_id="AbCdEfGhIjKl", blob=blob)
