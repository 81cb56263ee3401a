"""The abuse limits' arithmetic, on a fake clock (tests/integration/test_abuse.py: on sockets)."""

from __future__ import annotations

import logging

import pytest

from stream_sync.ingest.guard import Guard, GuardLimits
from tests.support import ManualClock as Clock

LIMITS = GuardLimits(
    max_connections=100,
    max_connections_per_address=3,
    failed_publishes=5,
    failed_per_key=4,
    failure_window=60.0,
    block_for=300.0,
    max_refusal_delay=5.0,
    free_failures=2,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(clock: Clock) -> Guard:
    return Guard(LIMITS, clock=clock)


def test_connections_are_limited_per_address_and_freed_on_close(guard: Guard) -> None:
    assert [guard.connection_opened("127.0.0.2", 0) for _ in range(3)] == [None] * 3
    assert guard.connection_opened("127.0.0.2", 3) == "address_full"
    assert guard.connection_opened("127.0.0.1", 3) is None  # another address is not affected
    guard.connection_closed("127.0.0.2")
    assert guard.connection_opened("127.0.0.2", 3) is None
    assert guard.counts["address_full"] == 1


def test_the_total_is_limited_whatever_the_address(guard: Guard) -> None:
    assert guard.connection_opened("10.0.0.1", 99) is None
    assert guard.connection_opened("10.0.0.2", 100) == "server_full"
    assert guard.open_from("10.0.0.2") == 0  # a refused connection is not counted


def test_ipv6_addresses_count_per_64(guard: Guard) -> None:
    for host in ("2001:db8::1", "2001:db8::2", "2001:db8::ffff:1"):
        assert guard.connection_opened(host, 0) is None
    assert guard.connection_opened("2001:db8:0:0:1::9", 0) == "address_full"  # same /64
    assert guard.connection_opened("2001:db8:0:1::1", 0) is None  # the next /64
    assert guard.connection_opened("::ffff:127.0.0.9", 0) is None
    assert guard.open_from("127.0.0.9") == 1  # IPv4-mapped counts as IPv4


def test_closed_connections_leave_no_entries(guard: Guard) -> None:
    for i in range(50):
        guard.connection_opened(f"10.1.0.{i}", 0)
        guard.connection_closed(f"10.1.0.{i}")
    assert guard._open == {}


def test_refusals_slow_down_then_block(guard: Guard, clock: Clock) -> None:
    delays = [guard.failed("127.0.0.2", None) for _ in range(4)]
    assert delays == [0.0, 0.0, 0.5, 1.0]  # a typo or two cost nothing; a retry loop waits
    assert guard.blocked_for("127.0.0.2") == 0
    assert guard.failed("127.0.0.2", None) == 2.0  # the 5th failure: blocked from now
    assert guard.blocked_for("127.0.0.2") == 300.0
    assert guard.blocked_for("127.0.0.1") == 0
    clock.now += 299
    assert guard.blocked_for("127.0.0.2") == pytest.approx(1.0)
    clock.now += 1
    assert guard.blocked_for("127.0.0.2") == 0
    assert guard.counts["address_blocked"] == 1
    assert guard.counts["slowed"] == 3


def test_the_delay_never_exceeds_the_limit(guard: Guard) -> None:
    delays = [guard.failed(f"10.2.0.{i % 2}", None) for i in range(60)]
    assert max(delays) == LIMITS.max_refusal_delay


def test_a_window_forgets_old_failures(guard: Guard, clock: Clock) -> None:
    for _ in range(4):
        guard.failed("127.0.0.2", None)
    clock.now += 61
    assert guard.failed("127.0.0.2", None) == 0.0  # a new window: counted from one
    assert guard.blocked_for("127.0.0.2") == 0


def test_a_key_id_under_attack_slows_every_wrong_guess(guard: Guard) -> None:
    # From four addresses, so no address reaches its own limits.
    delays = [guard.failed(f"10.3.0.{i}", "AbCdEfGhIjKl") for i in range(6)]
    assert delays[:4] == [0.0] * 4
    assert delays[4:] == [5.0, 5.0]
    assert guard.counts["key_attacked"] == 2
    # The key id's owner is not blocked: the guard never refuses a right secret.
    assert guard.blocked_for("127.0.0.1") == 0
    assert guard.failed("10.3.0.9", "other0000000") == 0.0  # other key ids are unaffected


def test_tables_are_bounded(clock: Clock) -> None:
    guard = Guard(LIMITS, clock=clock, max_entries=100)
    for i in range(1000):
        guard.failed(f"10.{i // 256}.{i % 256}.1", f"key{i:09d}")
    assert len(guard._addresses) == 100
    assert len(guard._keys) == 100


def test_refusals_are_logged_at_most_once_per_interval(
    guard: Guard, caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    caplog.set_level(logging.WARNING, "stream_sync.ingest.guard")
    for _ in range(500):
        guard.connection_opened("127.0.0.2", 200)
    clock.now += 10
    guard.connection_opened("127.0.0.3", 200)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "guard server_full: connection from 127.0.0.2 refused: 200 connections open,"
        " the most this process takes",
        "guard server_full: connection from 127.0.0.3 refused: 200 connections open,"
        " the most this process takes (499 more since the last report)",
    ]
    assert guard.counts["server_full"] == 501
