"""Work nobody awaits: kept alive until it ends, a failure logged, waited for at close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Background:
    """Tasks started and left to run (the event loop holds them only weakly)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        """Tasks running now."""
        return len(self._tasks)

    def spawn(self, coroutine: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
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
        """Return once no task is left, those started meanwhile included.

        Failures are logged, not raised.
        """
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def cancel(self) -> None:
        """Cancel every task, and return once they have ended."""
        while self._tasks:
            for task in self._tasks:
                task.cancel()
            await asyncio.wait(set(self._tasks))
