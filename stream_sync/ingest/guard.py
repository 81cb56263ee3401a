"""Abuse limits on the ingest port: connections per address, failed publishes, slowdowns.

A public RTMP port meets scanners, garbage, key guessers and encoders retrying a
revoked key every two seconds. The guard answers them from memory, before any
database or Redis round trip:

- Connections: at most ``max_connections`` open per process and
  ``max_connections_per_address`` per source address (IPv6 per /64); beyond that a
  new connection is closed at accept, before the handshake costs anything.
- Failed publishes (a malformed, unknown, revoked or expired key) are counted per
  address in a window that starts at its first failure. The first few are refused at
  once (a typo should not wait); after that each refusal waits longer, doubling up
  to ``max_refusal_delay``, so a retrying encoder slows down instead of storming.
  At ``failed_publishes`` the address is blocked for ``block_for`` seconds: its
  publishes are refused after the longest delay without looking at the key.
- Failed publishes are counted per key id too, from any address. A key id past
  ``failed_per_key`` is under attack: wrong secrets for it wait the longest delay,
  but the right secret is still admitted at once, so a stranger guessing at one key
  id can never lock its owner out.

A success clears nothing: an attacker holding one valid key must not be able to
reset an address's count. Everything is per process (workers each count what
reaches them), every table is bounded, and nothing here awaits, so one event loop
needs no locks. Every refusal is counted by reason for the metrics, and logged at
most once per ten seconds per reason, with the count of those not shown.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..addresses import address_key
from ..state.inprocess import RefusalLog

log = logging.getLogger("stream_sync.ingest.guard")
MAX_ENTRIES = 100_000  # addresses and key ids remembered per table; the oldest go first
LOG_EVERY = 10.0
# Refusal reasons that mean "wrong credentials", not "the server cannot take you now".
FAILURES = frozenset({"malformed_key", "unknown_key", "revoked_key", "expired_key"})


@dataclass(frozen=True, slots=True)
class GuardLimits:
    max_connections: int = 10_000
    max_connections_per_address: int = 32
    failed_publishes: int = 10  # per address in a window: then the address is blocked
    failed_per_key: int = 20  # per key id in a window, from any address: under attack
    failure_window: float = 60.0
    block_for: float = 300.0
    max_refusal_delay: float = 5.0
    free_failures: int = 2  # refused at once; later failures in the window wait


@dataclass(slots=True)
class _Window:
    started: float
    failures: int = 0
    blocked_until: float = 0.0


class Guard:
    def __init__(
        self,
        limits: GuardLimits = GuardLimits(),
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.limits = limits
        self._refusals = RefusalLog(log, LOG_EVERY, clock)
        self.counts = self._refusals.counts  # refusals and timeouts by reason, for metrics
        self._clock = clock
        self._max_entries = max_entries
        self._open: dict[str, int] = {}  # open connections per address key
        self._addresses: OrderedDict[str, _Window] = OrderedDict()
        self._keys: OrderedDict[str, _Window] = OrderedDict()

    # Connections --------------------------------------------------------------------------

    def connection_opened(self, address: str, open_now: int) -> str | None:
        """Count a new connection, or say why it is refused (then it is not counted).

        ``open_now`` is how many connections this process holds, this one excluded.
        """
        key = address_key(address)
        limits = self.limits
        if open_now >= limits.max_connections:
            return self.refuse(
                "server_full",
                "connection from %s refused: %d connections open, the most this process takes",
                address,
                open_now,
            )
        held = self._open.get(key, 0)
        if held >= limits.max_connections_per_address:
            return self.refuse(
                "address_full",
                "connection from %s refused: %d connections open from %s already",
                address,
                held,
                key,
            )
        self._open[key] = held + 1
        return None

    def connection_closed(self, address: str) -> None:
        key = address_key(address)
        held = self._open.get(key, 0) - 1
        if held > 0:
            self._open[key] = held
        else:
            self._open.pop(key, None)

    def open_from(self, address: str) -> int:
        return self._open.get(address_key(address), 0)

    # Publishes ----------------------------------------------------------------------------

    def blocked_for(self, address: str) -> float:
        """Seconds this address stays blocked; 0 when it may try a key."""
        entry = self._addresses.get(address_key(address))
        if entry is None:
            return 0.0
        return max(0.0, entry.blocked_until - self._clock())

    def failed(self, address: str, key_id: str | None) -> float:
        """Count a failed publish; the seconds to wait before refusing it."""
        now = self._clock()
        limits = self.limits
        key = address_key(address)
        entry = self._window(self._addresses, key, now)
        entry.failures += 1
        if entry.failures >= limits.failed_publishes and entry.blocked_until <= now:
            entry.blocked_until = now + limits.block_for
            self.refuse(
                "address_blocked",
                "%s blocked for %gs: %d failed publishes within %gs",
                key,
                limits.block_for,
                entry.failures,
                limits.failure_window,
            )
        delay = self._delay(entry.failures)
        if key_id is not None:
            attacked = self._window(self._keys, key_id, now)
            attacked.failures += 1
            if attacked.failures > limits.failed_per_key:
                self.refuse(
                    "key_attacked",
                    "key_id=%s: %d failed publishes within %gs, the latest from %s",
                    key_id,
                    attacked.failures,
                    limits.failure_window,
                    address,
                )
                delay = limits.max_refusal_delay
        if delay:
            self.counts["slowed"] += 1
        return delay

    def _delay(self, failures: int) -> float:
        beyond = failures - self.limits.free_failures
        if beyond <= 0:
            return 0.0
        return min(self.limits.max_refusal_delay, 0.5 * 2.0 ** min(beyond - 1, 16))

    def _window(self, table: OrderedDict[str, _Window], key: str, now: float) -> _Window:
        """The key's current window (a new one once the last has passed), now the newest."""
        entry = table.pop(key, None)
        if entry is None or now - entry.started > self.limits.failure_window:
            entry = _Window(now, blocked_until=entry.blocked_until if entry else 0.0)
        table[key] = entry
        while len(table) > self._max_entries:
            table.popitem(last=False)
        return entry

    # Reporting ----------------------------------------------------------------------------

    def refuse(self, reason: str, message: str, *args: object) -> str:
        """Count a refusal (or a timeout) by reason; log it, rate-limited per reason."""
        self._refusals.note(reason, f"guard {reason}: {message}", *args)
        return reason
