"""The monitor's timer for grace periods: Reconnecting channels whose grace ran out go offline.

It sleeps until the earliest running grace period ends, and wakes early when the
bus says a channel started reconnecting, so an idle server does not ask the
database every second. The bus is best effort: the timer also looks every
``POLL`` seconds, so a lost event delays an expiry by that much at worst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ..db.engine import OutageLog
from ..state.interfaces import BusEvent, EventBus, StatusChanged
from ..state.wakeup import wake_on
from . import lifecycle
from .lifecycle import Sessions
from .status import Status

__all__ = ["expire_grace_periods"]

log = logging.getLogger("stream_sync.monitor")
_FAILURES = OutageLog(log, "grace expiry")
POLL = 10.0  # seconds between looks when nothing is due and the bus says nothing
RETRY = 1.0  # seconds after a failed look, or one that left a due session open
SLACK = 0.01  # past a deadline, so that it has passed by the clock that checks it


def _reconnecting(event: BusEvent) -> bool:
    return isinstance(event, StatusChanged) and event.status == Status.RECONNECTING


async def expire_grace_periods(
    sessions: Sessions,
    bus: EventBus,
    publish: Callable[[BusEvent], Awaitable[None]],
    *,
    clock: Callable[[], float] = time.time,
) -> None:
    """Close what is due, then sleep until the next deadline; until cancelled."""
    wake = asyncio.Event()
    listener = asyncio.get_running_loop().create_task(wake_on(bus, wake, _reconnecting))
    try:
        while True:
            wake.clear()  # before looking: an event heard meanwhile means look again
            delay = POLL
            try:
                now = clock()
                for event in await lifecycle.expire_grace(sessions, now=now):
                    await publish(event)
                end = await lifecycle.next_grace_end(sessions)
                if end is not None:
                    # Due, yet still open after the look: retry, do not spin on it.
                    delay = RETRY if end <= now else min(POLL, max(0.0, end - clock()) + SLACK)
            except Exception as exc:
                _FAILURES.failed(exc)
                delay = RETRY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
