"""Concurrent calls answered together: a storm's round trips, paid once per batch.

A connection storm asks the database and Redis the same kind of question hundreds
of times within milliseconds, and each question costs far more client CPU (driver,
SQLAlchemy, redis-py) than the server needs to answer it. Here a call waits at most
for the batches already in flight; the calls that arrive meanwhile go out together
in the next one. A lone call goes out at the next turn of the event loop, so an idle
node pays nothing for it. Writes nobody waits on may ``linger``: a call that comes
within that time of the one before goes out that much later, with whatever arrived
meanwhile. Publishers starting one every few milliseconds, as a reconnect storm
spread over seconds does, otherwise cost a transaction each; one publish now and
then is still written at once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """``await coalescer(key)``: the value ``run`` gives for it, asked with others.

    ``run`` answers a batch of keys with one value per key, in order; if it raises,
    every caller in that batch gets the exception.
    """

    def __init__(
        self,
        run: Callable[[Sequence[K]], Awaitable[Sequence[V]]],
        *,
        in_flight: int = 2,
        max_batch: int = 256,
        linger: float = 0.0,
    ) -> None:
        if in_flight < 1 or max_batch < 1:
            raise ValueError("in_flight and max_batch must be at least 1")
        if not 0.0 <= linger <= 1.0:
            raise ValueError("linger is at most a second")
        self._run = run
        self._in_flight = in_flight
        self._max_batch = max_batch
        self._linger = linger
        self._last_call = -math.inf  # loop time of the latest call
        self._waiting: list[tuple[K, asyncio.Future[V]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def __call__(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._waiting.append((key, future))
        now, previous = loop.time(), self._last_call
        self._last_call = now
        self._schedule(loop, self._linger if now - previous < self._linger else 0.0)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop, linger: float = 0.0) -> None:
        if not self._scheduled and len(self._running) < self._in_flight:
            self._scheduled = True
            if linger:
                loop.call_later(linger, self._launch, loop)
            else:
                loop.call_soon(self._launch, loop)

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        while self._waiting and len(self._running) < self._in_flight:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            task = loop.create_task(self._answer(batch))
            self._running.add(task)
            task.add_done_callback(lambda done: self._finished(done, loop))

    def _finished(self, task: asyncio.Task[None], loop: asyncio.AbstractEventLoop) -> None:
        self._running.discard(task)
        if self._waiting:
            self._schedule(loop)

    async def _answer(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        batch = [(key, future) for key, future in batch if not future.done()]  # gave up
        if not batch:
            return
        try:
            values = await self._run([key for key, _ in batch])
            if len(values) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(values)} answers")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), value in zip(batch, values, strict=True):
            if not future.done():
                future.set_result(value)
