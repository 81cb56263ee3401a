"""Wake a polling loop when the bus says its answer may have changed.

The bus is best effort, so a loop woken this way still polls now and then; the
wake-up only lets it poll rarely when idle and promptly when something happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .errors import StateUnavailable
from .interfaces import BusEvent, EventBus

__all__ = ["wake_on"]

RESUBSCRIBE_AFTER = 1.0  # seconds, after the bus failed or was closed


async def wake_on(
    bus: EventBus, wake: asyncio.Event, wanted: Callable[[BusEvent], bool] = lambda _: True
) -> None:
    """Set ``wake`` on every ``wanted`` event, until cancelled."""
    while True:
        try:
            subscription = bus.subscribe()
            try:
                async for event in subscription:
                    if wanted(event):
                        wake.set()
            finally:
                subscription.close()
        except StateUnavailable:
            pass  # the loop's own poll goes on meanwhile
        await asyncio.sleep(RESUBSCRIBE_AFTER)
