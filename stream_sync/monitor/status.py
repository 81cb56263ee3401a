"""A channel's status (offline, live, reconnecting, testing) as a pure state machine.

Pure so that every writer applies the same rules: the ingest node (publishes start
and end, media flows or stalls) and the monitor (grace expiry, node loss) load the
channel's `ChannelState` from the database, call one transition function with their
``now``, store the new state and carry out its effects in order (session rows, then
a `StatusChanged` in the outbox per `StatusChange`, built with `status_event`). No
I/O and no clock here, so the rules are tested with an injected clock.

`StatusBook` is the reading side: it keeps the latest `StatusChanged` per channel for
the API and the dashboard, whatever order and however often events arrive.

Transitions, after the implicit expiry below. "Starting" is OFFLINE with a session
open and no media yet; every move into RECONNECTING sets ``grace_until = now +
grace`` and the pending reason; "close" is CloseSession plus StatusChange(OFFLINE)::

    from                input                -> to            effects
    offline, no session publish_accepted     -> starting      OpenSession(test)
    starting            media_flowing        -> LIVE/TESTING  StatusChange "started"
    starting            publish_ended        -> offline       CloseSession only: stopped,
                        / node_lost                           timeout (abrupt), kicked,
                                                              key revoked, node lost
    LIVE/TESTING        media_stalled        -> RECONNECTING  pending timeout
    LIVE/TESTING        ended ABRUPT         -> RECONNECTING  pending grace expired
    LIVE/TESTING        ended KICKED         -> RECONNECTING  pending kicked
    LIVE/TESTING        node_lost            -> RECONNECTING  pending node lost
    open, publishing    ended CLEAN          -> OFFLINE       close "stopped"
    open, publishing    ended REVOKED        -> OFFLINE       close "key revoked"
    any                 ended TAKEN_OVER     -> unchanged     (the newer publisher goes on)
    starting/LIVE/TEST. publish_accepted     -> unchanged     ContinueSession (takeover)
    RECONNECTING        publish_accepted     -> RECONNECTING  ContinueSession, grace
                                                              restarted, pending timeout
    RECONNECTING, pub.  media_flowing        -> LIVE/TESTING  StatusChange "resumed"
    RECONNECTING, pub.  ended ABRUPT         -> RECONNECTING  (grace and reason kept)
    RECONNECTING, pub.  ended KICKED         -> RECONNECTING  pending kicked, grace kept
    RECONNECTING, pub.  node_lost            -> RECONNECTING  pending node lost
    RECONNECTING        now >= grace_until   -> OFFLINE       close (pending reason)
    offline, no session media_flowing, pub.  -> LIVE/TESTING  OpenSession, StatusChange
    anything else                            -> unchanged     (late or duplicate report)

The last-but-one row: grace ran out on a reconnect that was still connected but had
sent no media; if media comes after all, it is a new session.

Decisions on the edges:

* Expiry is exact and implicit: every input first expires a RECONNECTING state
  whose ``now >= grace_until`` (as `tick` would have), so the outcome never depends
  on how often `tick` runs. A reconnect at ``grace_until - eps`` continues the
  session; at ``grace_until`` the old session closes (grace expired, with its own
  StatusChange to OFFLINE) and a new one opens.
* Only media makes a channel live; until then it stays OFFLINE with its session
  open (``publishing`` and no ``media``), so "OFFLINE with an open session" exists
  only in that window. A publish that ends before any media never announced
  anything: its session closes without a StatusChange, and it gets no grace (there
  is no live stream to protect, and a connect-and-drop loop must not show as
  reconnecting).
* Reconnecting within grace continues the session and restarts the grace from the
  reconnect (never shortening it): the new connection still needs a moment for its
  first media, and a reconnect at the last instant must not lose the session to the
  next tick. If media never comes, the session closes as "timeout".
* Dropping again while reconnecting keeps the running grace: one incident (a stall
  then the drop it causes) gets one grace, and dropping cannot extend it.
* A StatusChange is emitted whenever what consumers see, ``(status, grace_until)``,
  changes, and only then; the last one of a transition always matches the new
  state, so replaying them rebuilds exactly what the machine holds.
* Test mode is fixed per session: a continued session keeps its flag whatever the
  reconnect asked for, so a test session never turns LIVE (and a real one never
  hides as TESTING) in the middle; a changed flag applies to the next session.
* Reports about a connection that is no longer publishing are late or duplicates
  and change nothing: media or a stall or an end with ``publishing`` false. The
  machine does not know connection ids, so the ingest must report the end of a
  connection that lost its lease as TAKEN_OVER, however its socket ended.
* A grace of zero (or negative, or not finite) skips RECONNECTING: straight to
  OFFLINE with the reason that grace would have recorded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from stream_sync.state.interfaces import StatusChanged

__all__ = [
    "ChannelState",
    "CloseSession",
    "ContinueSession",
    "Effect",
    "EndKind",
    "EndReason",
    "OpenSession",
    "Status",
    "StatusBook",
    "StatusChange",
    "Transition",
    "media_flowing",
    "media_stalled",
    "node_lost",
    "publish_accepted",
    "publish_ended",
    "session_opened",
    "status_event",
    "tick",
]


class Status(StrEnum):
    OFFLINE = "offline"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    TESTING = "testing"


class EndKind(StrEnum):
    """How a publish ended, as the ingest node saw it."""

    CLEAN = "clean"  # FCUnpublish/deleteStream: the encoder meant to stop
    ABRUPT = "abrupt"  # the connection dropped, timed out, or the node shut down
    KICKED = "kicked"  # an admin kicked it (the key stays valid; it may come back)
    REVOKED = "revoked"  # its key was reset/revoked: it cannot come back with it
    TAKEN_OVER = "taken_over"  # a newer publisher of the same channel replaced it


class EndReason(StrEnum):
    """Why a session closed (stored in the session row)."""

    STOPPED = "stopped"
    TIMEOUT = "timeout"
    KICKED = "kicked"
    KEY_REVOKED = "key revoked"
    NODE_LOST = "node lost"
    GRACE_EXPIRED = "grace expired"


@dataclass(frozen=True, slots=True)
class ChannelState:
    status: Status = Status.OFFLINE
    session_id: int | None = None  # the open session, if any
    test: bool = False
    publishing: bool = False  # a publish is accepted and its connection is up
    media: bool = False  # media is flowing on it
    grace_until: float | None = None  # while reconnecting
    pending_reason: EndReason | None = None  # the reason to record if grace runs out
    since: float = 0.0  # when the status last changed


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Insert a session row, then report its id with `session_opened`."""

    test: bool


@dataclass(frozen=True, slots=True)
class ContinueSession:
    """A new publish carries on this open session (a reconnect or a takeover)."""

    session_id: int


@dataclass(frozen=True, slots=True)
class CloseSession:
    session_id: int
    reason: EndReason


@dataclass(frozen=True, slots=True)
class StatusChange:
    """Announce the channel's new status: stage a `StatusChanged` (`status_event`)."""

    status: Status
    reason: str | None
    grace_until: float | None


Effect = OpenSession | ContinueSession | CloseSession | StatusChange


@dataclass(frozen=True, slots=True)
class Transition:
    state: ChannelState
    effects: tuple[Effect, ...]


_ON_AIR = (Status.LIVE, Status.TESTING)


def publish_accepted(state: ChannelState, *, now: float, test: bool, grace: float) -> Transition:
    """A publish was admitted: continue the open session, or open one (not live yet)."""
    state, effects = _expire(state, now)
    if state.session_id is not None:  # a reconnect within grace, or a takeover
        effects.append(ContinueSession(state.session_id))
        state = replace(state, publishing=True, media=False)
        if state.status is Status.RECONNECTING:
            state = _wait(state, now, grace, EndReason.TIMEOUT, "reconnected", effects)
        return Transition(state, tuple(effects))
    effects.append(OpenSession(test))
    return Transition(replace(state, publishing=True, media=False, test=test), tuple(effects))


def session_opened(state: ChannelState, session_id: int) -> ChannelState:
    """Record the id of the row the caller inserted for `OpenSession`."""
    return replace(state, session_id=session_id)


def media_flowing(state: ChannelState, *, now: float) -> Transition:
    """Media arrives on the publishing connection: the only way to go live."""
    state, effects = _expire(state, now)
    if not state.publishing:  # a late report about a connection already gone
        return Transition(state, tuple(effects))
    on_air = Status.TESTING if state.test else Status.LIVE
    if state.session_id is None:  # its session ran out of grace before media came
        effects.append(OpenSession(state.test))
    if state.status is on_air:
        return Transition(replace(state, media=True), tuple(effects))
    reason = "resumed" if state.status is Status.RECONNECTING else "started"
    effects.append(StatusChange(on_air, reason, None))
    state = replace(
        state,
        status=on_air,
        media=True,
        grace_until=None,
        pending_reason=None,
        since=now,
    )
    return Transition(state, tuple(effects))


def media_stalled(state: ChannelState, *, now: float, grace: float) -> Transition:
    """No media for the stall window on an open connection: wait for it to come back."""
    state, effects = _expire(state, now)
    state = replace(state, media=False)
    if state.publishing and state.status in _ON_AIR:
        state = _wait(state, now, grace, EndReason.TIMEOUT, "media stalled", effects)
    return Transition(state, tuple(effects))


def publish_ended(state: ChannelState, *, now: float, kind: EndKind, grace: float) -> Transition:
    """The publishing connection ended; `kind` decides whether the owner may come back."""
    state, effects = _expire(state, now)
    if kind is EndKind.TAKEN_OVER or not state.publishing:
        return Transition(state, tuple(effects))
    ended = replace(state, publishing=False, media=False)
    if ended.session_id is None:
        return Transition(ended, tuple(effects))
    if kind is EndKind.CLEAN:
        ended = _offline(ended, now, EndReason.STOPPED, effects)
    elif kind is EndKind.REVOKED:
        ended = _offline(ended, now, EndReason.KEY_REVOKED, effects)
    elif ended.status is Status.OFFLINE:  # before any media: nothing to wait for
        reason = EndReason.KICKED if kind is EndKind.KICKED else EndReason.TIMEOUT
        ended = _offline(ended, now, reason, effects)
    elif ended.status is Status.RECONNECTING:  # the grace already runs
        if kind is EndKind.KICKED:
            ended = replace(ended, pending_reason=EndReason.KICKED)
    elif kind is EndKind.KICKED:
        ended = _wait(ended, now, grace, EndReason.KICKED, "kicked", effects)
    else:
        ended = _wait(ended, now, grace, EndReason.GRACE_EXPIRED, "connection lost", effects)
    return Transition(ended, tuple(effects))


def node_lost(state: ChannelState, *, now: float, grace: float) -> Transition:
    """The node carrying this channel's publish stopped heartbeating.

    Call it only for channels whose publish was on that node.
    """
    state, effects = _expire(state, now)
    if not state.publishing:  # nothing was on the node (or grace already runs)
        return Transition(state, tuple(effects))
    lost = replace(state, publishing=False, media=False)
    if lost.session_id is not None:
        if lost.status is Status.OFFLINE:
            lost = _offline(lost, now, EndReason.NODE_LOST, effects)
        else:
            lost = _wait(lost, now, grace, EndReason.NODE_LOST, "node lost", effects)
    return Transition(lost, tuple(effects))


def tick(state: ChannelState, *, now: float) -> Transition:
    """Grace expiry: RECONNECTING at or past ``grace_until`` goes OFFLINE."""
    state, effects = _expire(state, now)
    return Transition(state, tuple(effects))


def status_event(
    channel_id: int,
    change: StatusChange,
    *,
    session_id: int | None,
    at: float,
    node: str = "",
) -> StatusChanged:
    """The bus event for a StatusChange; the outbox fills in ``seq`` when staged.

    ``session_id`` is the session the change is about: the one just closed for
    OFFLINE, the open (or just opened) one otherwise.
    """
    return StatusChanged(
        channel_id=channel_id,
        status=change.status.value,
        session_id=session_id,
        at=at,
        grace_until=change.grace_until,
        reason=change.reason,
        node=node,
    )


def _expire(state: ChannelState, now: float) -> tuple[ChannelState, list[Effect]]:
    effects: list[Effect] = []
    if state.status is Status.RECONNECTING and (
        state.grace_until is None or now >= state.grace_until  # no deadline: repair it
    ):
        reason = state.pending_reason or EndReason.GRACE_EXPIRED
        state = _offline(state, now, reason, effects)
    return state, effects


def _offline(
    state: ChannelState, now: float, reason: EndReason, effects: list[Effect]
) -> ChannelState:
    """Close the session; announce OFFLINE only if something else was announced."""
    if state.session_id is not None:
        effects.append(CloseSession(state.session_id, reason))
    changed = state.status is not Status.OFFLINE
    if changed:
        effects.append(StatusChange(Status.OFFLINE, reason.value, None))
    return replace(
        state,
        status=Status.OFFLINE,
        session_id=None,
        media=False,
        grace_until=None,
        pending_reason=None,
        since=now if changed else state.since,
    )


def _wait(
    state: ChannelState,
    now: float,
    grace: float,
    pending: EndReason,
    reason: str,
    effects: list[Effect],
) -> ChannelState:
    """Enter (or stay in) RECONNECTING; a running grace is never shortened."""
    until = now + (grace if math.isfinite(grace) and grace > 0 else 0.0)
    if state.status is Status.RECONNECTING and state.grace_until is not None:
        until = max(until, state.grace_until)
    if until <= now:
        return _offline(state, now, pending, effects)
    if state.status is not Status.RECONNECTING or state.grace_until != until:
        effects.append(StatusChange(Status.RECONNECTING, reason, until))
    return replace(
        state,
        status=Status.RECONNECTING,
        grace_until=until,
        pending_reason=pending,
        since=state.since if state.status is Status.RECONNECTING else now,
    )


_STATUSES = frozenset(Status)


class StatusBook:
    """The latest status per channel from `StatusChanged` events, for API and dashboard.

    Events come from the bus and the outbox, so some arrive twice or late. A numbered
    event (``seq`` > 0, from the outbox) counts only if its seq is above every seq
    seen for the channel; an unnumbered one (seq 0: it could not be recorded) only if
    it is newer by ``at`` than what is shown, and a numbered one does not replace a
    newer unnumbered one either.
    """

    def __init__(self) -> None:
        self._latest: dict[int, StatusChanged] = {}
        self._seq: dict[int, int] = {}

    def apply(self, event: StatusChanged) -> bool:
        """Keep event if it is newer; False when it was ignored."""
        if event.status not in _STATUSES:  # e.g. a value from a newer release
            return False
        channel = event.channel_id
        current = self._latest.get(channel)
        if event.seq > 0:
            if event.seq <= self._seq.get(channel, 0):
                return False
            self._seq[channel] = event.seq
            if current is not None and current.seq <= 0 and event.at < current.at:
                return False
        elif current is not None and event.at <= current.at:
            return False
        self._latest[channel] = event
        return True

    def status(self, channel_id: int) -> StatusChanged | None:
        return self._latest.get(channel_id)

    def view(self, channel_id: int, *, now: float) -> tuple[Status, float | None]:
        """The status at ``now`` and, while reconnecting, the seconds of grace left.

        Once the grace has run out the channel is offline by the rules, even before
        the monitor's OFFLINE event arrives, so it shows as such.
        """
        event = self._latest.get(channel_id)
        if event is None:
            return Status.OFFLINE, None
        status = Status(event.status)
        if status is not Status.RECONNECTING or event.grace_until is None:
            return status, None
        left = event.grace_until - now
        if left <= 0:
            return Status.OFFLINE, None
        return status, left

    def seed(self, events: Iterable[StatusChanged]) -> None:
        """Load the latest known statuses (from the database at start), in any order."""
        for event in events:
            self.apply(event)
