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
bus and stages what it decides. After a restart the watcher reads the session's
last announcement from the outbox, so a value is not announced twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..credentials.errors import ChannelNotFound
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
    """Follows the statistics on the bus and stages settled health changes."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        *,
        settle: float = DEFAULT_SETTLE,
        clock: Callable[[], float],
        staged: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self._clock = clock
        self._staged = staged  # told after each staged event (the webhook fan-out wakes)
        self.settling = HealthSettling(settle)
        self._failing = False  # an outage is logged once, not once per stream and second

    async def run(self) -> None:
        subscription = self._bus.subscribe(stats=True)
        try:
            async for event in subscription:
                if isinstance(event, StreamStats):
                    await self.observe(event)
        finally:
            subscription.close()

    async def observe(self, stats: StreamStats) -> None:
        now = self._clock()
        try:
            if not self.settling.knows(stats.channel_id, stats.session_id):
                announced = await self._announced(stats.channel_id, stats.session_id)
                self.settling.start(stats.channel_id, stats.session_id, announced)
            event = self.settling.observe(stats, now)
            if event is not None:
                try:
                    await self._stage(event)
                except Exception:
                    self.settling.retract(event)
                    raise
                self._failing = False
        except Exception as exc:
            if not unreachable(exc):
                log.exception("health changes: could not record channel %d", stats.channel_id)
            elif not self._failing:
                log.warning("health changes: database unreachable (%s)", type(exc).__name__)
            self._failing = True
        self.settling.prune(now)

    async def _stage(self, event: HealthChanged) -> None:
        async with self._sessions() as session:
            try:
                async with session.begin():
                    await outbox.stage(session, event)
            except ChannelNotFound:
                return  # deleted meanwhile
        self._staged()

    async def _announced(self, channel_id: int, session_id: int | None) -> str | None:
        """The last value staged for this session, if any (a restarted monitor)."""
        async with self._sessions() as session, session.begin():
            payload = await session.scalar(
                select(OutboxEvent.payload)
                .where(OutboxEvent.channel_id == channel_id, OutboxEvent.type == "HealthChanged")
                .order_by(OutboxEvent.seq.desc())
                .limit(1)
            )
        if payload is None:
            return None
        try:
            event = decode_event(payload)
        except UnknownEvent:
            return None
        if isinstance(event, HealthChanged) and event.session_id == session_id:
            return event.overall
        return None
