"""Sign-in throttling, in memory and per process.

Policy:

- Per account (the email as typed, stripped and lowercased, whether or not the
  account exists, so lockouts do not reveal which accounts exist): failures
  count as a streak that is forgotten after 15 minutes without a failure. From
  the 5th failure on, each failure locks the account for 30 s, doubling with
  every further failure (30 s, 1 min, 2 min, ...) up to 15 minutes. A
  successful sign-in clears the account's streak.
- Per source address: 30 failures within a 15-minute window (counted from the
  window's first failure) block the address for 15 minutes. IPv6 addresses
  count per /64, the block a single host usually controls. Success does not
  clear an address: an attacker with one valid account must not reset it.

It never touches the database, so a flood of sign-ins costs nothing there, and
it has nothing to do with ingest: a throttled sign-in affects no live stream.
Memory is bounded: entries expire after the window, and past ``max_keys`` per
kind the least recently failed entry is forgotten. There are no awaits inside,
so it is safe on one event loop without locks. A shared engine (Redis) can
implement the same three methods later.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..addresses import address_key

WINDOW = 15 * 60.0
ACCOUNT_FREE_FAILURES = 4  # the 5th failure locks
ACCOUNT_FIRST_LOCKOUT = 30.0
ACCOUNT_MAX_LOCKOUT = 15 * 60.0
ADDRESS_MAX_FAILURES = 30
ADDRESS_BLOCK = 15 * 60.0
MAX_KEYS = 100_000
_KEY_MAX = 254  # longer input cannot be an account; bounds the memory per entry

_V = TypeVar("_V")


@dataclass(slots=True)
class _Account:
    failures: int
    last_failure: float
    locked_until: float


@dataclass(slots=True)
class _Address:
    window_start: float
    failures: int
    blocked_until: float


class LoginThrottle:
    def __init__(
        self, *, now: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS
    ) -> None:
        self._now = now
        self._max_keys = max_keys
        # Ordered by last failure, oldest first: expiry and eviction pop from the front.
        self._accounts: OrderedDict[str, _Account] = OrderedDict()
        self._addresses: OrderedDict[str, _Address] = OrderedDict()

    def __len__(self) -> int:
        """Entries tracked (accounts and addresses); for tests and metrics."""
        return len(self._accounts) + len(self._addresses)

    def check(self, email: str, address: str | None) -> float:
        """Seconds to wait before this sign-in may be tried; 0 means go ahead."""
        now = self._now()
        self._expire(now)
        wait = 0.0
        account = self._accounts.get(_account_key(email))
        if account is not None:
            wait = max(wait, account.locked_until - now)
        if address is not None:
            entry = self._addresses.get(address_key(address))
            if entry is not None:
                wait = max(wait, entry.blocked_until - now)
        return max(wait, 0.0)

    def failed(self, email: str, address: str | None) -> None:
        now = self._now()
        self._expire(now)
        key = _account_key(email)
        account = self._accounts.pop(key, None)
        if account is None or now - account.last_failure > WINDOW:
            account = _Account(failures=0, last_failure=now, locked_until=0.0)
        account.failures += 1
        account.last_failure = now
        beyond = account.failures - ACCOUNT_FREE_FAILURES
        if beyond > 0:
            # The exponent is capped so a long streak cannot overflow a float.
            lockout = min(ACCOUNT_FIRST_LOCKOUT * 2 ** min(beyond - 1, 32), ACCOUNT_MAX_LOCKOUT)
            account.locked_until = max(account.locked_until, now + lockout)
        self._remember(self._accounts, key, account)

        if address is None:
            return
        key = address_key(address)
        entry = self._addresses.pop(key, None)
        if entry is None or now - entry.window_start > WINDOW:
            entry = _Address(
                window_start=now,
                failures=0,
                blocked_until=entry.blocked_until if entry else 0.0,
            )
        entry.failures += 1
        if entry.failures >= ADDRESS_MAX_FAILURES:
            entry.blocked_until = max(entry.blocked_until, now + ADDRESS_BLOCK)
        self._remember(self._addresses, key, entry)

    def succeeded(self, email: str, address: str | None) -> None:
        """Clears the account's streak (not the address's: see the module docstring)."""
        self._accounts.pop(_account_key(email), None)

    def _remember(self, table: OrderedDict[str, _V], key: str, value: _V) -> None:
        table[key] = value  # popped by the caller, so this goes to the end
        while len(table) > self._max_keys:
            table.popitem(last=False)

    def _expire(self, now: float) -> None:
        """Forget entries that can no longer lock or count: cheap, from the oldest end."""
        accounts = self._accounts
        while accounts:
            account = next(iter(accounts.values()))
            if now - account.last_failure <= WINDOW or now < account.locked_until:
                break
            accounts.popitem(last=False)
        addresses = self._addresses
        while addresses:
            entry = next(iter(addresses.values()))
            if now - entry.window_start <= WINDOW or now < entry.blocked_until:
                break
            addresses.popitem(last=False)


def _account_key(email: str) -> str:
    return email.strip().lower()[:_KEY_MAX]
