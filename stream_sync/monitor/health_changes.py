"""A live stream's overall health, announced when it settles on a new value.

Health is judged every second on the ingest node and travels only in the
best-effort statistics. Webhooks want a change as an event with a place in the
channel's sequence, so the monitor role stages a `HealthChanged` in the outbox,
off the ingest path. A stream hovering at a threshold flips between good and ok
every few seconds: a new value is announced only after it has held for
``settle`` seconds, and ``no_data`` (a stream's first seconds) never is. The first
settled value of a session is announced too (``previous`` None): a stream that
starts bad must be told.

`HealthSettling` is pure (``now`` passed in); `HealthWatcher` feeds it from the
bus, a round a second, and stages what it decides. After a restart the watcher
reads the session's last announcement from the outbox, so a value is not
announced twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.engine import unreachable
from ..db.models import OutboxEvent
from ..state import outbox
from ..state.codec import UnknownEvent, decode_event
from ..state.interfaces import EventBus, HealthChanged, StreamStats

__all__ = ["DEFAULT_SETTLE", "HealthSettling", "HealthWatcher"]

log = logging.getLogger("stream_sync.monitor")
DEFAULT_SETTLE = 10.0
_FORGET_AFTER = 120.0  # seconds without statistics: the stream is gone
_PRUNE_EVERY = 10.0
_NO_DATA = "no_data"
_LOOKUP_CHUNK = 500  # channels per query: well within every database's parameter limit


@dataclass(slots=True)
class _Channel:
    session_id: int | None
    announced: str | None
    candidate: str | None = None
    since: float = 0.0
    seen: float = 0.0


class HealthSettling:
    """Per channel: the value announced last and a new one waiting to settle."""

    def __init__(self, settle: float = DEFAULT_SETTLE) -> None:
        self.settle = settle
        self._channels: dict[int, _Channel] = {}
        self._pruned = 0.0

    def knows(self, channel_id: int, session_id: int | None) -> bool:
        state = self._channels.get(channel_id)
        return state is not None and state.session_id == session_id

    def start(self, channel_id: int, session_id: int | None, announced: str | None) -> None:
        """Begin following a session, given what was announced for it before (if anything)."""
        self._channels[channel_id] = _Channel(session_id, announced)

    def observe(self, stats: StreamStats, now: float) -> HealthChanged | None:
        """One statistics message; the event to stage when a new value has settled."""
        overall = stats.health.get("overall")
        state = self._channels.get(stats.channel_id)
        if state is None or state.session_id != stats.session_id:
            state = self._channels[stats.channel_id] = _Channel(stats.session_id, None)
        state.seen = now
        if not isinstance(overall, str) or overall in (_NO_DATA, state.announced):
            state.candidate = None
            return None
        if overall != state.candidate:
            state.candidate, state.since = overall, now
        if now - state.since < self.settle:
            return None
        event = HealthChanged(
            channel_id=stats.channel_id,
            session_id=stats.session_id,
            overall=overall,
            previous=state.announced,
            issues=_codes(stats.health.get("issues")),
            at=now,
        )
        state.announced, state.candidate = overall, None
        return event

    def retract(self, event: HealthChanged) -> None:
        """Staging ``event`` failed: announce it with the next statistics that agree."""
        state = self._channels.get(event.channel_id)
        if state is not None and state.session_id == event.session_id:
            state.announced, state.candidate = event.previous, event.overall
            state.since = event.at - self.settle

    def prune(self, now: float) -> None:
        """Forget streams not heard of for a while (a sweep at most every few seconds:
        statistics arrive once a second per stream)."""
        if now - self._pruned < _PRUNE_EVERY:
            return
        self._pruned = now
        for channel_id, state in list(self._channels.items()):
            if now - state.seen > _FORGET_AFTER:
                del self._channels[channel_id]


def _codes(issues: object) -> list[str]:
    if not isinstance(issues, list):
        return []
    return [str(issue["code"]) for issue in issues if isinstance(issue, dict) and "code" in issue]


class HealthWatcher:
    """Follows the statistics on the bus and stages settled health changes.

    Statistics are taken in rounds (``every`` seconds, the latest per channel): a
    round's new sessions are looked up in one query and its changes staged in one
    transaction. Staged one by one, the 200 streams of a busy node starting
    together cost 400 transactions ten seconds later, more CPU than their media.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        *,
        settle: float = DEFAULT_SETTLE,
        clock: Callable[[], float],
        staged: Callable[[], None] = lambda: None,
        every: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self._clock = clock
        self._staged = staged  # told after each staged round (the webhook fan-out wakes)
        self._every = every
        self.settling = HealthSettling(settle)
        self._latest: dict[int, StreamStats] = {}
        self._arrived = asyncio.Event()
        self._failing = False  # an outage is logged once, not once per stream and second

    async def run(self) -> None:
        rounds = asyncio.create_task(self._rounds())
        subscription = self._bus.subscribe(stats=True)
        try:
            async for event in subscription:
                if isinstance(event, StreamStats):
                    self._latest[event.channel_id] = event
                    self._arrived.set()
        finally:
            subscription.close()
            rounds.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rounds

    async def _rounds(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            batch, self._latest = list(self._latest.values()), {}
            await self.observe(batch)
            await asyncio.sleep(self._every)

    async def observe(self, batch: Sequence[StreamStats]) -> None:
        """One round of statistics (at most one per channel)."""
        now = self._clock()
        try:
            fresh = [s for s in batch if not self.settling.knows(s.channel_id, s.session_id)]
            if fresh:
                announced = await self._announced({s.channel_id for s in fresh})
                for s in fresh:
                    previous = announced.get(s.channel_id)
                    value = (
                        previous.overall
                        if previous and previous.session_id == s.session_id
                        else None
                    )
                    self.settling.start(s.channel_id, s.session_id, value)
            events = [e for s in batch if (e := self.settling.observe(s, now)) is not None]
            if events:
                try:
                    await self._stage(events)
                except Exception:
                    for event in events:
                        self.settling.retract(event)
                    raise
            self._failing = False
        except Exception as exc:
            if not unreachable(exc):
                log.exception("health changes: could not record %d stream(s)", len(batch))
            elif not self._failing:
                log.warning("health changes: database unreachable (%s)", type(exc).__name__)
            self._failing = True
        self.settling.prune(now)

    async def _stage(self, events: Sequence[HealthChanged]) -> None:
        async with self._sessions() as session, session.begin():
            await outbox.stage_each(session, events)  # a deleted channel's is left out
        self._staged()

    async def _announced(self, channel_ids: set[int]) -> dict[int, HealthChanged]:
        """Each channel's last staged change, if any (what a restarted monitor said)."""
        found: dict[int, HealthChanged] = {}
        ids = sorted(channel_ids)
        async with self._sessions() as session, session.begin():
            for at in range(0, len(ids), _LOOKUP_CHUNK):
                chunk = ids[at : at + _LOOKUP_CHUNK]
                latest = (
                    select(OutboxEvent.channel_id, func.max(OutboxEvent.seq).label("seq"))
                    .where(OutboxEvent.type == "HealthChanged", OutboxEvent.channel_id.in_(chunk))
                    .group_by(OutboxEvent.channel_id)
                    .subquery()
                )
                rows = await session.execute(
                    select(OutboxEvent.channel_id, OutboxEvent.payload).join(
                        latest,
                        (OutboxEvent.channel_id == latest.c.channel_id)
                        & (OutboxEvent.seq == latest.c.seq),
                    )
                )
                for channel_id, payload in rows:
                    with contextlib.suppress(UnknownEvent):
                        event = decode_event(payload)
                        if isinstance(event, HealthChanged) and channel_id is not None:
                            found[channel_id] = event
        return found
