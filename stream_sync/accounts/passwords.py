"""Password hashing and the password policy.

Hashes are argon2id with OWASP's recommended minimum (Password Storage Cheat
Sheet): m=19 MiB (memory_cost=19456 KiB), t=2, p=1. That is about 30-50 ms and
19 MiB per hash on a server core: slow enough to make offline guessing
expensive, cheap enough that a sign-in burst does not exhaust memory. Hashes
are PHC strings that carry their own parameters, so raising the parameters
later only needs ``needs_rehash`` (sign-in rehashes transparently).

Passwords are NFKC-normalized before hashing, so the same password typed on
systems that compose accents differently still matches.

The service code uses the ``*_async`` forms: they run on a small dedicated
thread pool (argon2 releases the GIL), so a burst of sign-ins never stalls the
event loop that also carries live streams, and the pool's size bounds the
memory that hashing can take (workers x 19 MiB).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import Parameters, PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from stream_sync.accounts.errors import WeakPassword

OWASP_PARAMETERS = Parameters(
    type=Type.ID,
    version=19,
    salt_len=16,
    hash_len=32,
    time_cost=2,
    memory_cost=19456,  # KiB: 19 MiB
    parallelism=1,
)
PASSWORD_MIN = 12
# Bounds the work of a single hash; argon2 itself would accept megabytes.
PASSWORD_MAX = 1024

HASH_WORKERS = min(4, os.cpu_count() or 1)

_T = TypeVar("_T")
_executor = ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="argon2")

# The one hasher in use. Tests swap it for a cheaper one (see tests/unit/accounts).
_hasher = PasswordHasher.from_parameters(OWASP_PARAMETERS)
# A hash to verify against when the email is unknown, so that failure costs the
# same as a wrong password. Made on first use (not at import, which would slow
# every CLI start) and again whenever the hasher changes.
_dummy: tuple[PasswordHasher, str] | None = None


def _normalize(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str) -> str:
    return _hasher.hash(_normalize(password))


def verify_password(stored_hash: str, password: str) -> bool:
    """True on a match. A mismatch or an unreadable hash is False, never an exception."""
    try:
        return _hasher.verify(stored_hash, _normalize(password))
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True if the hash was made with other parameters than the current ones."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


def dummy_verify(password: str) -> None:
    """Spend the time of one verification, for a sign-in whose email matches nobody."""
    global _dummy  # noqa: PLW0603 - a lazily made, process-wide constant
    if _dummy is None or _dummy[0] is not _hasher:
        _dummy = (_hasher, _hasher.hash(secrets.token_urlsafe(16)))
    verify_password(_dummy[1], password)


async def _off_loop(function: Callable[..., _T], *args: str) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_executor, function, *args)


async def hash_password_async(password: str) -> str:
    return await _off_loop(hash_password, password)


async def verify_password_async(stored_hash: str, password: str) -> bool:
    return await _off_loop(verify_password, stored_hash, password)


async def dummy_verify_async(password: str) -> None:
    await _off_loop(dummy_verify, password)


def check_password_policy(password: str, *, email: str) -> None:
    """Raise WeakPassword (with a message for the user) unless the password is acceptable.

    Length is what matters (NIST SP 800-63B): no composition rules, only the
    obvious refusals. The message never repeats the password.
    """
    normalized = _normalize(password)
    if len(normalized) < PASSWORD_MIN:
        raise WeakPassword(f"a password needs at least {PASSWORD_MIN} characters")
    if len(normalized) > PASSWORD_MAX:
        raise WeakPassword(f"a password has at most {PASSWORD_MAX} characters")
    if normalized.strip().casefold() == email.strip().casefold():
        raise WeakPassword("the password cannot be your email address")
    if len(set(normalized)) == 1:
        raise WeakPassword("the password cannot be one character repeated")
