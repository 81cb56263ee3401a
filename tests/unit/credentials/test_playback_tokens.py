"""Playback URL signatures: bound to the channel and deadline, any secret generation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from stream_sync.credentials import playback
from stream_sync.credentials.server_secrets import ServerSecrets


def secrets() -> ServerSecrets:
    return ServerSecrets(hmac_key=os.urandom(32), encryption_key=os.urandom(32))


def test_a_signature_opens_its_channel_until_its_deadline() -> None:
    ours = secrets()
    signature = playback.sign(ours, 7, 1_000)
    assert playback.verify(ours, 7, 1_000, signature, now=999.5)
    assert playback.verify(ours, 7, 1_000, signature, now=1_000)
    assert not playback.verify(ours, 7, 1_000, signature, now=1_000.01)  # expired
    assert not playback.verify(ours, 8, 1_000, signature, now=0)  # another channel
    assert not playback.verify(ours, 7, 2_000, signature, now=0)  # a later deadline
    assert not playback.verify(secrets(), 7, 1_000, signature, now=0)  # another server
    assert not playback.verify(ours, 7, 1_000, signature[:-1], now=0)
    assert not playback.verify(ours, 7, 1_000, "", now=0)


def test_a_rotated_secret_still_verifies_what_it_signed() -> None:
    old = secrets()
    signature = playback.sign(old, 7, 1_000)
    new = ServerSecrets(hmac_key=os.urandom(32), encryption_key=os.urandom(32), previous=(old,))
    assert playback.verify(new, 7, 1_000, signature, now=0)
    assert playback.sign(new, 7, 1_000) != signature  # new URLs use the new secret


def test_the_signature_is_not_the_key_hmac() -> None:
    """A playback signature is made with a derived key, never with the key-hashing one."""
    ours = secrets()
    plain = hmac.new(ours.hmac_key, b"play:7:1000", hashlib.sha256).digest()
    assert playback.sign(ours, 7, 1_000) != base64.urlsafe_b64encode(plain).rstrip(b"=").decode()
