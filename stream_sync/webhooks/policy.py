"""How webhooks are retried and how many attempts run at once: plain values from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

__all__ = ["RetryPolicy", "SenderLimits"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``first`` seconds, doubling, at most ``cap``, for ``give_up_after``.

    With the defaults: 10 s, 20 s, 40 s ... 2,560 s, then hourly: 32 attempts in
    the day before a delivery is marked failed.
    """

    first: float = 10.0
    cap: float = 3600.0
    give_up_after: float = 86_400.0

    def delay(self, attempts: int) -> timedelta:
        """How long to wait after the ``attempts``-th failed attempt."""
        doublings = min(max(attempts - 1, 0), 60)  # 2**60 times anything passes the cap
        return timedelta(seconds=min(self.first * 2.0**doublings, self.cap))


@dataclass(frozen=True, slots=True)
class SenderLimits:
    timeout: float = 10.0  # seconds for one attempt, connecting included
    total: int = 32  # attempts in flight at once
    per_endpoint: int = 4  # of those, for one endpoint
