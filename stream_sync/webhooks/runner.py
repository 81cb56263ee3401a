"""The monitor role's webhook duties, as one background task: fan-out and sender.

The fan-out reads the outbox once a second, and at once when the bus says
something was committed (lifecycle events are published after their commit)
while an endpoint is enabled;
the sender looks for due deliveries once a second while an endpoint is enabled
(with none, nothing can be due), and at once when the fan-out created some or an
attempt freed a slot. Everything here runs off the ingest
path: a slow database or receiver delays webhooks, never a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync.credentials.server_secrets import ServerSecrets
from stream_sync.db.engine import OutageLog
from stream_sync.state.interfaces import EventBus
from stream_sync.state.wakeup import wake_on

from .fanout import Fanout
from .policy import RetryPolicy, SenderLimits
from .sender import WebhookSender

__all__ = ["Webhooks"]

log = logging.getLogger("stream_sync.webhooks")
_FAILURES = OutageLog(log, "webhook fan-out")
POLL_INTERVAL = 1.0


class Webhooks:
    """Fan-out and sender of one process; ``clock`` (epoch seconds) times the retries."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        secrets: ServerSecrets,
        bus: EventBus,
        *,
        policy: RetryPolicy,
        limits: SenderLimits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.policy = policy
        self._bus = bus
        self._committed = asyncio.Event()
        self.fanout = Fanout(sessions, policy=policy, clock=self.now)
        self.sender = WebhookSender(sessions, secrets, policy=policy, limits=limits, clock=self.now)

    def now(self) -> float:
        """Through the attribute, so a test can swap the clock before the node starts."""
        return self.clock()

    def committed(self) -> None:
        """Something was staged in the outbox: fan out now rather than at the next poll."""
        self._committed.set()

    async def run(self) -> None:
        # Any event on the bus may follow a commit to the outbox.
        sending = self.sender.run(POLL_INTERVAL, active=lambda: self.fanout.listening)
        tasks = [
            asyncio.get_running_loop().create_task(coroutine)
            for coroutine in (self._fan_out(), sending, wake_on(self._bus, self._committed))
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _fan_out(self) -> None:
        while True:
            self._committed.clear()
            try:
                if await self.fanout.run_once():
                    self.sender.wake()
            except Exception as exc:
                _FAILURES.failed(exc)
            if self.fanout.full:
                continue  # more is waiting
            if not self.fanout.listening:
                # Nobody to tell: a poll a second, not a round per commit (a storm of
                # publishes makes hundreds, and each round is a few queries).
                await asyncio.sleep(POLL_INTERVAL)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._committed.wait(), POLL_INTERVAL)
