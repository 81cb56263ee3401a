"""Signatures as a receiver checks them: Stripe's scheme, constant-time, with a tolerance."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from stream_sync.webhooks import signing

SECRET = "whsec_test0123456789abcdefghijklmnopqrstuvwxyzABCD"
BODY = b'{"id":"e1","type":"stream.live"}'
T = 1_800_000_000


def test_the_header_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signing.sign(SECRET, BODY, T) == f"t={T},v1={expected}"


def test_a_signed_body_verifies_and_returns_its_timestamp() -> None:
    header = signing.sign(SECRET, BODY, T)
    assert signing.verify(SECRET, BODY, header, now=T + 10) == T


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        ("whsec_another-secret-entirely-000000", BODY, T),  # wrong secret
        (SECRET, BODY + b" ", T),  # body changed
        (SECRET, BODY, T + signing.TOLERANCE + 1),  # replayed too late
        (SECRET, BODY, T - signing.TOLERANCE - 1),  # from the future
    ],
)
def test_anything_else_is_refused(secret: str, body: bytes, now: float) -> None:
    header = signing.sign(SECRET, BODY, T)
    with pytest.raises(signing.InvalidSignature):
        signing.verify(secret, body, header, now=now)


@pytest.mark.parametrize(
    "header",
    ["", "v1=abc", f"t={T}", f"t=x{T},v1=00", "garbage", f"t={T},v1=é", "t=" + "1" * 5000],
)
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(signing.InvalidSignature):
        signing.verify(SECRET, BODY, header, now=T)


def test_one_matching_signature_among_several_is_enough() -> None:
    good = signing.signature(SECRET, BODY, T)
    header = f"t={T},v1={'0' * 64},v0=ignored,v1={good}"
    assert signing.verify(SECRET, BODY, header, now=T) == T
