from __future__ import annotations

import threading

import argon2
import pytest
from argon2 import PasswordHasher, Type

from stream_sync.accounts import WeakPassword, passwords
from stream_sync.accounts.passwords import (
    check_password_policy,
    hash_password,
    hash_password_async,
    needs_rehash,
    verify_password,
    verify_password_async,
)

from .conftest import CHEAP_HASHER, PASSWORD


@pytest.mark.usefixtures("real_hashing")
def test_real_hashes_are_argon2id_with_owasp_parameters() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    parameters = argon2.extract_parameters(stored)
    assert parameters.type is Type.ID
    assert (parameters.memory_cost, parameters.time_cost, parameters.parallelism) == (19456, 2, 1)
    assert parameters.salt_len >= 16
    assert parameters.hash_len >= 32
    assert verify_password(stored, PASSWORD)
    assert not needs_rehash(stored)


@pytest.mark.usefixtures("real_hashing")
def test_real_parameters_ask_to_rehash_weaker_hashes() -> None:
    assert needs_rehash(CHEAP_HASHER.hash(PASSWORD))


def test_salted_hashes_differ() -> None:
    assert hash_password(PASSWORD) != hash_password(PASSWORD)


def test_verify_true_and_false() -> None:
    stored = hash_password(PASSWORD)
    assert verify_password(stored, PASSWORD) is True
    assert verify_password(stored, PASSWORD + "!") is False
    assert verify_password(stored, "") is False


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not a hash",
        "$2b$12$abcdefghijklmnopqrstuuJ8xvOv8d9tFUcO5oDkAs.F2bu7x4zW",  # bcrypt
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$",  # truncated
        "$argon2id$v=19$m=8,t=1,p=1$!!!!$!!!!",
    ],
)
def test_corrupt_hash_is_false_not_an_exception(stored: str) -> None:
    assert verify_password(stored, PASSWORD) is False
    assert needs_rehash(stored) is True


def test_passwords_are_unicode_normalized() -> None:
    composed, decomposed = "caf\u00e9 au lait s'il vous", "cafe\u0301 au lait s'il vous"
    assert verify_password(hash_password(composed), decomposed)


def test_dummy_verification_follows_the_current_hasher(monkeypatch: pytest.MonkeyPatch) -> None:
    passwords.dummy_verify(PASSWORD)
    assert passwords._dummy is not None
    assert passwords._dummy[0] is CHEAP_HASHER
    other = PasswordHasher(time_cost=2, memory_cost=8, parallelism=1, type=Type.ID)
    monkeypatch.setattr(passwords, "_hasher", other)
    passwords.dummy_verify(PASSWORD)
    assert passwords._dummy[0] is other
    assert argon2.extract_parameters(passwords._dummy[1]).time_cost == 2


@pytest.mark.parametrize(
    ("password", "fragment"),
    [
        ("", "at least 12"),
        ("short pass", "at least 12"),
        ("x" * 10 + "y", "at least 12"),
        ("a" * 1025, "at most 1024"),
        ("Someone@Example.com", "email"),
        ("  someone@example.com ", "email"),
        ("aaaaaaaaaaaaaaaa", "one character"),
        ("\u00e9" * 12, "one character"),
    ],
)
def test_policy_refusals(password: str, fragment: str) -> None:
    with pytest.raises(WeakPassword) as caught:
        check_password_policy(password, email="someone@example.com")
    assert fragment in caught.value.message
    assert caught.value.status == 422
    assert caught.value.code == "weak_password"
    if password.strip():
        assert password.strip() not in caught.value.message  # never echoed


@pytest.mark.parametrize(
    "password",
    [
        "x" * 11 + "y",  # exactly 12, two distinct characters
        "a" * 1023 + "b",  # exactly 1024
        "correct horse battery staple",
        "someone@example.com1",
        "\u00e9t\u00e9 \u00e0 la plage",
    ],
)
def test_policy_accepts(password: str) -> None:
    check_password_policy(password, email="someone@example.com")


def test_length_is_counted_after_normalization() -> None:
    # "\ufb01" (the "fi" ligature) becomes two characters under NFKC.
    check_password_policy("\ufb01" * 6 + "ab", email="someone@example.com")
    with pytest.raises(WeakPassword):
        check_password_policy("x" * 11, email="someone@example.com")


async def test_async_hashing_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []

    class Recording(PasswordHasher):
        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            threads.append(threading.current_thread().name)
            return super().hash(password, salt=salt)

    monkeypatch.setattr(passwords, "_hasher", Recording(time_cost=1, memory_cost=8, parallelism=1))
    stored = await hash_password_async(PASSWORD)
    assert await verify_password_async(stored, PASSWORD)
    assert not await verify_password_async(stored, "something else entirely")
    assert len(threads) == 1
    assert threads[0].startswith("argon2")
    assert threads[0] != threading.current_thread().name
