"""Token buckets per address, on a manual clock."""

from __future__ import annotations

import pytest

from stream_sync.api.ratelimit import RequestLimiter
from tests.support import ManualClock


def test_a_burst_then_the_rate() -> None:
    clock = ManualClock()
    limiter = RequestLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.take("10.0.0.1") for _ in range(3)] == [0.0] * 3
    assert limiter.take("10.0.0.1") == pytest.approx(0.5)  # one token comes every 0.5 s
    assert limiter.take("10.0.0.2") == 0.0  # every address has its own bucket
    clock.now += 0.5
    assert limiter.take("10.0.0.1") == 0.0
    assert limiter.take("10.0.0.1") > 0
    clock.now += 60
    assert [limiter.take("10.0.0.1") for _ in range(4)] == [0.0] * 3 + [pytest.approx(0.5)]
    assert limiter.refused == {"rate_limited": 3}


def test_ipv6_shares_a_bucket_per_64_and_zero_is_off() -> None:
    limiter = RequestLimiter(rate=1, burst=1, clock=ManualClock())
    assert limiter.take("2001:db8::1") == 0.0
    assert limiter.take("2001:db8::2") > 0
    off = RequestLimiter(rate=0, burst=1)
    assert all(off.take("10.0.0.1") == 0.0 for _ in range(1000))


def test_the_table_is_bounded() -> None:
    limiter = RequestLimiter(rate=1, burst=1, clock=ManualClock(), max_entries=10)
    for i in range(1000):
        limiter.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) == 10
