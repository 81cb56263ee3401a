from __future__ import annotations

import pytest

from stream_sync.accounts import LoginThrottle, TooManyAttempts
from tests.support import ManualClock as Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock: Clock) -> LoginThrottle:
    return LoginThrottle(now=clock)


def test_four_failures_are_free(throttle: LoginThrottle) -> None:
    for _ in range(4):
        assert throttle.check("a@example.com", "192.0.2.1") == 0
        throttle.failed("a@example.com", "192.0.2.1")
    assert throttle.check("a@example.com", "192.0.2.1") == 0


def test_account_lockout_doubles_up_to_fifteen_minutes(
    throttle: LoginThrottle, clock: Clock
) -> None:
    for _ in range(4):
        throttle.failed("a@example.com", None)
    waits = []
    for _ in range(8):
        throttle.failed("a@example.com", None)
        wait = throttle.check("a@example.com", None)
        waits.append(wait)
        clock.now += wait  # the attacker waits exactly as long as told
    assert waits == [30, 60, 120, 240, 480, 900, 900, 900]


def test_account_lockout_applies_from_any_address_and_case(
    throttle: LoginThrottle, clock: Clock
) -> None:
    for number in range(5):
        throttle.failed("A@Example.com", f"192.0.2.{number}")
    assert throttle.check(" a@example.COM", "198.51.100.1") == 30
    assert throttle.check("b@example.com", "198.51.100.1") == 0  # other accounts unaffected
    clock.now += 10
    assert throttle.check("a@example.com", None) == 20


def test_success_clears_the_account(throttle: LoginThrottle, clock: Clock) -> None:
    for _ in range(5):
        throttle.failed("a@example.com", "192.0.2.1")
    clock.now += 30
    throttle.succeeded("a@example.com", "192.0.2.1")
    throttle.failed("a@example.com", "192.0.2.1")
    assert throttle.check("a@example.com", "192.0.2.1") == 0  # a fresh streak


def test_streak_is_forgotten_after_fifteen_quiet_minutes(
    throttle: LoginThrottle, clock: Clock
) -> None:
    for _ in range(4):
        throttle.failed("a@example.com", None)
    clock.now += 15 * 60 + 1
    throttle.failed("a@example.com", None)
    assert throttle.check("a@example.com", None) == 0
    for _ in range(3):
        clock.now += 14 * 60  # still within 15 minutes of the previous failure
        throttle.failed("a@example.com", None)
    throttle.failed("a@example.com", None)
    assert throttle.check("a@example.com", None) == 30


def test_address_blocked_after_thirty_failures(throttle: LoginThrottle, clock: Clock) -> None:
    for number in range(29):
        throttle.failed(f"user{number}@example.com", "192.0.2.1")
        clock.now += 10
    assert throttle.check("new@example.com", "192.0.2.1") == 0
    throttle.failed("user29@example.com", "192.0.2.1")
    assert throttle.check("new@example.com", "192.0.2.1") == 15 * 60
    assert throttle.check("new@example.com", "192.0.2.2") == 0
    # Success on an account does not lift the address block.
    throttle.succeeded("user0@example.com", "192.0.2.1")
    assert throttle.check("new@example.com", "192.0.2.1") == 15 * 60
    clock.now += 15 * 60
    assert throttle.check("new@example.com", "192.0.2.1") == 0


def test_address_window_restarts(throttle: LoginThrottle, clock: Clock) -> None:
    for number in range(29):
        throttle.failed(f"user{number}@example.com", "192.0.2.1")
    clock.now += 15 * 60 + 1
    throttle.failed("late@example.com", "192.0.2.1")
    assert throttle.check("new@example.com", "192.0.2.1") == 0


def test_ipv6_counts_per_64(throttle: LoginThrottle) -> None:
    for number in range(30):
        throttle.failed(f"user{number}@example.com", f"2001:db8:1:2::{number:x}")
    assert throttle.check("new@example.com", "2001:db8:1:2:ffff::1") == 15 * 60
    assert throttle.check("new@example.com", "2001:db8:1:3::1") == 0
    throttle.failed("x@example.com", "::ffff:192.0.2.1")
    assert len({key for key in throttle._addresses if "192.0.2.1" in key}) == 1


def test_memory_is_bounded(clock: Clock) -> None:
    throttle = LoginThrottle(now=clock, max_keys=100)
    for number in range(1000):
        throttle.failed(f"user{number}@example.com", f"10.0.{number // 256}.{number % 256}")
    assert len(throttle._accounts) == 100
    assert len(throttle._addresses) == 100
    assert "user999@example.com" in throttle._accounts  # the newest stay
    assert "user0@example.com" not in throttle._accounts
    # Huge input is cut to a bounded key.
    throttle.failed("x" * 100_000, "y" * 100_000)
    assert max(len(key) for key in throttle._accounts) <= 254
    assert max(len(key) for key in throttle._addresses) <= 64


def test_old_entries_are_forgotten(throttle: LoginThrottle, clock: Clock) -> None:
    for number in range(50):
        throttle.failed(f"user{number}@example.com", "192.0.2.1")
    assert len(throttle) == 51
    clock.now += 15 * 60 + 1  # the address block (15 min) has also just ended
    assert throttle.check("someone@example.com", "192.0.2.1") == 0
    assert len(throttle) == 0


def test_locked_entries_are_kept_until_their_lock_ends(
    throttle: LoginThrottle, clock: Clock
) -> None:
    for _ in range(10):
        throttle.failed("a@example.com", None)
    assert throttle.check("a@example.com", None) == 900
    clock.now += 899
    assert throttle.check("a@example.com", None) == 1
    assert len(throttle) == 1


def test_too_many_attempts_message() -> None:
    error = TooManyAttempts(29.2)
    assert error.retry_after == 29.2
    assert error.message == "too many sign-in attempts; try again in 30 seconds"
    assert (error.status, error.code) == (429, "too_many_attempts")
