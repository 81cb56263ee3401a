"""The grace timer: an expiry comes at its deadline, not at the next poll; the bus wakes it
for a channel that starts reconnecting later; and without the bus it still polls."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stream_sync.monitor import grace, lifecycle
from stream_sync.monitor.status import EndKind
from stream_sync.state.inprocess import InProcessBus
from stream_sync.state.interfaces import BusEvent, PublishEnded, StatusChanged

from .test_lifecycle import channel, flowing, start

Sessions = async_sessionmaker[AsyncSession]
SHORT = 0.3  # seconds of grace: real time, the timer sleeps on the event loop
WITHIN = 5.0  # far below the poll each test sets, so only the path under test can pass


async def reconnecting(sessions: Sessions, name: str, grace: float = SHORT) -> list[StatusChanged]:
    """A channel whose publisher dropped just now, with ``grace`` seconds of grace."""
    channel_id, key_id = await channel(sessions, name)
    now = time.time()
    started, _ = await start(sessions, channel_id, key_id, now)
    await flowing(sessions, channel_id, now)
    event = PublishEnded(
        channel_id, key_id, "c1", started.session_id, "lost", 1000, 1, 1, "avc1", "mp4a", "n"
    )
    _, outcome = await lifecycle.publish_ended(
        sessions, event=event, kind=EndKind.ABRUPT, grace=grace, summary=lifecycle.Summary(),
        now=now,
    )  # fmt: skip
    assert [e.status for e in outcome.status_events] == ["reconnecting"]
    return outcome.status_events


class Timer:
    """The timer as the monitor runs it, its announcements in a queue; stopped on exit."""

    def __init__(self, sessions: Sessions) -> None:
        self.bus = InProcessBus()
        self.announced: asyncio.Queue[BusEvent] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(
            grace.expire_grace_periods(sessions, self.bus, self._publish)
        )

    async def __aenter__(self) -> Timer:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _publish(self, event: BusEvent) -> None:
        self.announced.put_nowait(event)

    async def next(self) -> StatusChanged:
        event = await asyncio.wait_for(self.announced.get(), WITHIN)
        assert isinstance(event, StatusChanged)
        return event


async def test_a_grace_period_ends_at_its_deadline_not_at_the_next_poll(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grace, "POLL", 600.0)
    (dropped,) = await reconnecting(sessions, "dropped")
    assert dropped.grace_until is not None
    async with Timer(sessions) as made:
        expired = await made.next()
        over_by = time.time() - dropped.grace_until
    assert (expired.channel_id, expired.status, expired.reason) == (
        dropped.channel_id,
        "offline",
        "grace expired",
    )
    assert 0 <= over_by < 1.0


async def test_the_bus_wakes_the_timer_for_a_channel_that_starts_reconnecting_later(
    sessions: Sessions, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grace, "POLL", 600.0)
    asked = asyncio.Event()  # the timer asked for the next deadline: it goes to sleep

    def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "min(publish_sessions.grace_until)" in statement:
            asked.set()

    sa_event.listen(engine.sync_engine, "after_cursor_execute", executed)
    try:
        async with Timer(sessions) as made:
            await asyncio.wait_for(asked.wait(), WITHIN)  # nothing is reconnecting yet
            (dropped,) = await reconnecting(sessions, "later")
            await made.bus.publish(dropped)  # as the ingest node does, after its commit
            expired = await made.next()
    finally:
        sa_event.remove(engine.sync_engine, "after_cursor_execute", executed)
    assert (expired.channel_id, expired.status) == (dropped.channel_id, "offline")


async def test_without_the_bus_the_timer_still_polls(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grace, "POLL", 0.2)
    async with Timer(sessions) as made:
        (dropped,) = await reconnecting(sessions, "unannounced")  # nothing on the bus
        expired = await made.next()
    assert (expired.channel_id, expired.status) == (dropped.channel_id, "offline")


async def test_a_due_session_left_open_is_retried_not_spun_on(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever keeps a due session open (here a look that closes nothing), the timer
    looks again after RETRY, not in a tight loop on a deadline already past."""
    await reconnecting(sessions, "stuck", grace=0.001)  # due by the first look
    monkeypatch.setattr(grace, "RETRY", 0.2)
    looks: list[float] = []
    third = asyncio.Event()

    async def closes_nothing(_sessions: Sessions, *, now: float, node: str = "") -> list[Any]:
        looks.append(time.monotonic())
        if len(looks) == 3:
            third.set()
        return []

    monkeypatch.setattr(lifecycle, "expire_grace", closes_nothing)
    async with Timer(sessions):
        await asyncio.wait_for(third.wait(), WITHIN)
    assert looks[2] - looks[0] >= 0.35  # two waits of RETRY; a spin would take milliseconds
