"""Work nobody awaits: kept alive until it ends, a failure logged, waited for at close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class Background:
    """Tasks started and left to run (the event loop holds them only weakly)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coroutine``; an exception it lets out is logged as "could not <what>"."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(done, what))
        return task

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.error("could not %s", what, exc_info=exc)

    async def settle(self) -> None:
        """Return once every task started so far has ended (failures are logged, not raised)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))
