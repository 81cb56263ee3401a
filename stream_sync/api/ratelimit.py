"""Requests per client address, as token buckets: a flood gets 429 before any route runs.

Each address (the trusted proxy's client, IPv6 per /64) may make ``burst`` requests
at once and ``rate`` per second after that: a dashboard loading a page with its
assets never notices, a script hammering the API waits. WebSocket handshakes count
as requests. Sign-in has its own, stricter guard (accounts/throttle.py: failures
per account and address), which keeps password hashing from being a CPU sink.

In memory, per process, no awaits; at most ``max_entries`` addresses are tracked
(the least recently seen are forgotten, which only ever gives them a full bucket).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..addresses import address_key
from ..state.inprocess import RefusalLog

log = logging.getLogger("stream_sync.api")
MAX_ENTRIES = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RequestLimiter:
    def __init__(
        self,
        rate: float = 50.0,
        burst: int = 200,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.rate = rate  # 0: no limit
        self.burst = burst
        self._refusals = RefusalLog(log, 10.0, clock)
        self.refused = self._refusals.counts  # by reason, for the metrics
        self._clock = clock
        self._max_entries = max_entries
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, address: str) -> float:
        """Take a token for this address: 0 when there was one, else seconds until there is."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        key = address_key(address)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        self._buckets[key] = bucket  # now the most recently seen
        while len(self._buckets) > self._max_entries:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        self.note("rate_limited", key, f"over {self.rate:g} requests a second")
        return (1 - bucket.tokens) / self.rate

    def note(self, reason: str, address: str, detail: str) -> None:
        """Count a refused request by reason; log it at most once per 10 s per reason."""
        self._refusals.note(reason, "HTTP %s: %s from %s", reason, detail, address)
