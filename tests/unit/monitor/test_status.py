"""The channel status machine with an injected clock, and the consumer-side StatusBook."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_sync.monitor.status import (
    ChannelState,
    CloseSession,
    ContinueSession,
    Effect,
    EndKind,
    EndReason,
    OpenSession,
    Status,
    StatusBook,
    StatusChange,
    Transition,
    media_flowing,
    media_stalled,
    node_lost,
    publish_accepted,
    publish_ended,
    session_opened,
    status_event,
    tick,
)
from stream_sync.state.codec import decode_event, encode_event
from stream_sync.state.interfaces import StatusChanged

G = 30.0  # the default grace
T0 = 100.0
EPS = 1e-6
OFFLINE, LIVE, RECONNECTING, TESTING = (
    Status.OFFLINE,
    Status.LIVE,
    Status.RECONNECTING,
    Status.TESTING,
)


class Caller:
    """Plays an ingest node or the monitor: carries out effects, checks them on the way.

    Sessions are numbered 1, 2, ...; ``seen`` is what a consumer rebuilt from the
    StatusChanges alone.
    """

    def __init__(self, state: ChannelState | None = None) -> None:
        self.state = state or ChannelState()
        self.next_id = 1
        self.open: dict[int, bool] = {}  # session id -> test flag
        if self.state.session_id is not None:
            self.open[self.state.session_id] = self.state.test
            self.next_id = self.state.session_id + 1
        self.closed: list[tuple[int, EndReason]] = []
        self.changes: list[StatusChange] = []
        self.events: list[StatusChanged] = []
        self.seen: tuple[Status, float | None] = (self.state.status, self.state.grace_until)

    def run(self, transition: Transition, now: float) -> tuple[Effect, ...]:
        before = self.state
        state = transition.state
        for effect in transition.effects:
            if isinstance(effect, OpenSession):
                assert not self.open, "a second session opened"
                session_id, self.next_id = self.next_id, self.next_id + 1
                self.open[session_id] = effect.test
                state = session_opened(state, session_id)
            elif isinstance(effect, ContinueSession):
                assert list(self.open) == [effect.session_id]
            elif isinstance(effect, CloseSession):
                assert list(self.open) == [effect.session_id] == [before.session_id]
                del self.open[effect.session_id]
                self.closed.append((effect.session_id, effect.reason))
            else:
                self._announce(effect, state, now)
        self.state = state
        return transition.effects

    def _announce(self, change: StatusChange, state: ChannelState, now: float) -> None:
        assert change.reason
        if change.status is RECONNECTING:
            assert change.grace_until is not None
            assert change.grace_until > now
        else:
            assert change.grace_until is None
        if change.status in (LIVE, TESTING):  # never LIVE for a test session, and back
            assert self.open[state.session_id or -1] == (change.status is TESTING)
        session = state.session_id
        if change.status is OFFLINE and self.closed:
            session = self.closed[-1][0]
        self.changes.append(change)
        self.events.append(
            dataclasses.replace(
                status_event(7, change, session_id=session, at=now, node="ingest-a"),
                seq=len(self.events) + 1,
            )
        )
        self.seen = (change.status, change.grace_until)

    # The inputs, with the default grace.
    def accept(self, now: float, *, test: bool = False, grace: float = G) -> tuple[Effect, ...]:
        return self.run(publish_accepted(self.state, now=now, test=test, grace=grace), now)

    def media(self, now: float) -> tuple[Effect, ...]:
        return self.run(media_flowing(self.state, now=now), now)

    def stall(self, now: float, *, grace: float = G) -> tuple[Effect, ...]:
        return self.run(media_stalled(self.state, now=now, grace=grace), now)

    def end(self, now: float, kind: EndKind, *, grace: float = G) -> tuple[Effect, ...]:
        return self.run(publish_ended(self.state, now=now, kind=kind, grace=grace), now)

    def lost(self, now: float, *, grace: float = G) -> tuple[Effect, ...]:
        return self.run(node_lost(self.state, now=now, grace=grace), now)

    def tick(self, now: float) -> tuple[Effect, ...]:
        return self.run(tick(self.state, now=now), now)

    def step(self, name: str, now: float, *, test: bool, kind: EndKind, grace: float) -> None:
        """One input by name, as the property tests draw them."""
        if name == "accept":
            self.accept(now, test=test, grace=grace)
        elif name == "media":
            self.media(now)
        elif name == "stall":
            self.stall(now, grace=grace)
        elif name == "end":
            self.end(now, kind, grace=grace)
        elif name == "lost":
            self.lost(now, grace=grace)
        else:
            self.tick(now)

    def live_at(self, now: float, *, test: bool = False) -> None:
        self.accept(now, test=test)
        self.media(now + 0.5)


def check_invariants(state: ChannelState, now: float) -> None:
    reconnecting = state.status is RECONNECTING
    assert reconnecting == (state.grace_until is not None) == (state.pending_reason is not None)
    if state.status is not OFFLINE:
        assert state.session_id is not None
    elif state.session_id is not None:  # the window between publish and first media
        assert state.publishing
        assert not state.media
    if state.status in (LIVE, TESTING):
        assert state.publishing
    assert state.status is not (TESTING if not state.test else LIVE)
    if state.media:
        assert state.publishing
        assert state.status in (LIVE, TESTING)
    assert state.since <= now


# --- Every input from every situation ----------------------------------------------------

IDLE = ChannelState()
STARTING = ChannelState(session_id=1, publishing=True)  # accepted, no media yet
ON_AIR = ChannelState(LIVE, 1, publishing=True, media=True, since=90.0)
ON_AIR_TEST = dataclasses.replace(ON_AIR, status=TESTING, test=True)
STALLED = ChannelState(
    RECONNECTING, 1, publishing=True, grace_until=120.0, pending_reason=EndReason.TIMEOUT,
    since=95.0,
)  # fmt: skip
DROPPED = dataclasses.replace(STALLED, publishing=False, pending_reason=EndReason.GRACE_EXPIRED)
ORPHAN = ChannelState(publishing=True)  # grace ran out while the encoder sat connected

Input = Callable[[ChannelState], Transition]


def _ender(kind: EndKind) -> Input:
    return lambda state: publish_ended(state, now=T0, kind=kind, grace=G)


INPUTS: dict[str, Input] = {
    "accept": lambda s: publish_accepted(s, now=T0, test=False, grace=G),
    "accept test": lambda s: publish_accepted(s, now=T0, test=True, grace=G),
    "media": lambda s: media_flowing(s, now=T0),
    "stall": lambda s: media_stalled(s, now=T0, grace=G),
    **{f"end {kind}": _ender(kind) for kind in EndKind},
    "node lost": lambda s: node_lost(s, now=T0, grace=G),
    "tick": lambda s: tick(s, now=T0),
}
SAME: dict[str, Any] = {}
GONE = {"session_id": None, "publishing": False, "media": False}


def _close(reason: EndReason) -> tuple[dict[str, Any], tuple[Effect, ...]]:
    """A live or reconnecting channel closed at once."""
    changes = {
        **GONE, "status": OFFLINE, "grace_until": None, "pending_reason": None, "since": T0,
    }  # fmt: skip
    return changes, (CloseSession(1, reason), StatusChange(OFFLINE, reason.value, None))


def _wait(pending: EndReason, reason: str, **more: Any) -> tuple[dict[str, Any], tuple[Effect]]:
    changes = {
        "status": RECONNECTING, "grace_until": T0 + G, "pending_reason": pending, "since": T0,
        "media": False, **more,
    }  # fmt: skip
    return changes, (StatusChange(RECONNECTING, reason, T0 + G),)


def _on_air_rows(start: ChannelState) -> list[tuple[ChannelState, str, dict[str, Any], Any]]:
    return [
        (start, "accept", {"media": False}, (ContinueSession(1),)),
        (start, "accept test", {"media": False}, (ContinueSession(1),)),  # flag is per session
        (start, "media", SAME, ()),
        (start, "stall", *_wait(EndReason.TIMEOUT, "media stalled")),
        (start, "end clean", *_close(EndReason.STOPPED)),
        (start, "end abrupt", *_wait(EndReason.GRACE_EXPIRED, "connection lost", publishing=False)),
        (start, "end kicked", *_wait(EndReason.KICKED, "kicked", publishing=False)),
        (start, "end revoked", *_close(EndReason.KEY_REVOKED)),
        (start, "end taken_over", SAME, ()),
        (start, "node lost", *_wait(EndReason.NODE_LOST, "node lost", publishing=False)),
        (start, "tick", SAME, ()),
    ]


RECONNECTED = {
    "publishing": True, "grace_until": T0 + G, "pending_reason": EndReason.TIMEOUT,
}  # fmt: skip
ROWS: list[tuple[ChannelState, str, dict[str, Any], Any]] = [
    *[(IDLE, name, SAME, ()) for name in INPUTS if not name.startswith("accept")],
    (IDLE, "accept", {"publishing": True}, (OpenSession(test=False),)),
    (IDLE, "accept test", {"publishing": True, "test": True}, (OpenSession(test=True),)),
    (STARTING, "accept", SAME, (ContinueSession(1),)),
    (STARTING, "accept test", SAME, (ContinueSession(1),)),
    (STARTING, "media", {"status": LIVE, "media": True, "since": T0},
     (StatusChange(LIVE, "started", None),)),
    (STARTING, "stall", SAME, ()),  # never announced: nothing to wait for
    (STARTING, "end clean", GONE, (CloseSession(1, EndReason.STOPPED),)),
    (STARTING, "end abrupt", GONE, (CloseSession(1, EndReason.TIMEOUT),)),  # no grace
    (STARTING, "end kicked", GONE, (CloseSession(1, EndReason.KICKED),)),
    (STARTING, "end revoked", GONE, (CloseSession(1, EndReason.KEY_REVOKED),)),
    (STARTING, "end taken_over", SAME, ()),
    (STARTING, "node lost", GONE, (CloseSession(1, EndReason.NODE_LOST),)),
    (STARTING, "tick", SAME, ()),
    *_on_air_rows(ON_AIR),
    *_on_air_rows(ON_AIR_TEST),
    (STALLED, "accept", {"grace_until": T0 + G},
     (ContinueSession(1), StatusChange(RECONNECTING, "reconnected", T0 + G))),
    (STALLED, "accept test", {"grace_until": T0 + G},
     (ContinueSession(1), StatusChange(RECONNECTING, "reconnected", T0 + G))),
    (STALLED, "media", {"status": LIVE, "media": True, "grace_until": None,
                        "pending_reason": None, "since": T0},
     (StatusChange(LIVE, "resumed", None),)),
    (STALLED, "stall", SAME, ()),
    (STALLED, "end clean", *_close(EndReason.STOPPED)),
    (STALLED, "end abrupt", {"publishing": False}, ()),  # one incident, one grace
    (STALLED, "end kicked", {"publishing": False, "pending_reason": EndReason.KICKED}, ()),
    (STALLED, "end revoked", *_close(EndReason.KEY_REVOKED)),
    (STALLED, "end taken_over", SAME, ()),
    (STALLED, "node lost", {"publishing": False, "grace_until": T0 + G,
                            "pending_reason": EndReason.NODE_LOST},
     (StatusChange(RECONNECTING, "node lost", T0 + G),)),
    (STALLED, "tick", SAME, ()),
    (DROPPED, "accept", RECONNECTED,
     (ContinueSession(1), StatusChange(RECONNECTING, "reconnected", T0 + G))),
    (DROPPED, "accept test", RECONNECTED,
     (ContinueSession(1), StatusChange(RECONNECTING, "reconnected", T0 + G))),
    *[(DROPPED, name, SAME, ()) for name in INPUTS if not name.startswith("accept")],
    (ORPHAN, "accept", SAME, (OpenSession(test=False),)),
    (ORPHAN, "accept test", {"test": True}, (OpenSession(test=True),)),
    (ORPHAN, "media", {"status": LIVE, "media": True, "since": T0},
     (OpenSession(test=False), StatusChange(LIVE, "started", None))),
    (ORPHAN, "stall", SAME, ()),
    *[(ORPHAN, f"end {kind}", {"publishing": False}, ())
      for kind in EndKind if kind is not EndKind.TAKEN_OVER],
    (ORPHAN, "end taken_over", SAME, ()),
    (ORPHAN, "node lost", {"publishing": False}, ()),
    (ORPHAN, "tick", SAME, ()),
]  # fmt: skip
NAMES = {id(IDLE): "idle", id(STARTING): "starting", id(ON_AIR): "live",
         id(ON_AIR_TEST): "testing", id(STALLED): "stalled", id(DROPPED): "dropped",
         id(ORPHAN): "orphan"}  # fmt: skip


def test_the_table_covers_every_input_from_every_situation() -> None:
    covered = {(NAMES[id(start)], name) for start, name, _, _ in ROWS}
    assert covered == {(situation, name) for situation in NAMES.values() for name in INPUTS}
    assert len(ROWS) == len(covered)


@pytest.mark.parametrize(
    ("start", "name", "changes", "effects"),
    ROWS,
    ids=[f"{NAMES[id(start)]}-{name}" for start, name, _, _ in ROWS],
)
def test_transition(
    start: ChannelState, name: str, changes: dict[str, Any], effects: tuple[Effect, ...]
) -> None:
    check_invariants(start, T0)
    transition = INPUTS[name](start)
    assert transition.effects == effects
    assert transition.state == dataclasses.replace(start, **changes)
    opened = any(isinstance(effect, OpenSession) for effect in effects)
    check_invariants(session_opened(transition.state, 2) if opened else transition.state, T0)


# --- Grace boundaries ------------------------------------------------------------------------


def _dropped() -> Caller:
    caller = Caller()
    caller.live_at(T0 - 10)
    caller.end(T0, EndKind.ABRUPT)
    assert caller.state.grace_until == T0 + G
    return caller


def test_a_reconnect_just_inside_grace_continues_the_session() -> None:
    caller = _dropped()
    assert caller.accept(T0 + G - EPS) == (
        ContinueSession(1),
        StatusChange(RECONNECTING, "reconnected", T0 + G - EPS + G),
    )
    assert caller.state.status is RECONNECTING  # not live until media
    assert caller.media(T0 + G + 1) == (StatusChange(LIVE, "resumed", None),)
    assert caller.state.session_id == 1
    assert caller.closed == []


def test_a_reconnect_exactly_at_grace_until_opens_a_new_session() -> None:
    caller = _dropped()
    assert caller.accept(T0 + G) == (
        CloseSession(1, EndReason.GRACE_EXPIRED),
        StatusChange(OFFLINE, "grace expired", None),
        OpenSession(test=False),
    )
    assert caller.state.status is OFFLINE
    caller.media(T0 + G + 1)
    assert (caller.state.status, caller.state.session_id) == (LIVE, 2)


def test_tick_expires_exactly_at_grace_until() -> None:
    caller = _dropped()
    assert caller.tick(T0 + G - EPS) == ()
    assert caller.state.status is RECONNECTING
    assert caller.tick(T0 + G) == (
        CloseSession(1, EndReason.GRACE_EXPIRED),
        StatusChange(OFFLINE, "grace expired", None),
    )
    assert caller.state == ChannelState(since=T0 + G)
    assert caller.tick(T0 + G + 1) == ()


def test_a_late_tick_changes_nothing_the_next_input_would_not() -> None:
    on_time, late = _dropped(), _dropped()
    on_time.tick(T0 + G)
    on_time.accept(T0 + G + 5)
    late.accept(T0 + G + 5)  # tick never ran: the accept expires the grace first
    assert on_time.closed == late.closed == [(1, EndReason.GRACE_EXPIRED)]
    assert on_time.changes == late.changes
    assert dataclasses.replace(on_time.state, since=0) == dataclasses.replace(late.state, since=0)


def test_a_reconnect_that_never_sends_media_times_out() -> None:
    caller = _dropped()
    caller.accept(T0 + 10)
    assert caller.state.grace_until == T0 + 10 + G  # restarted: time for the first media
    assert caller.tick(T0 + 10 + G) == (
        CloseSession(1, EndReason.TIMEOUT),
        StatusChange(OFFLINE, "timeout", None),
    )
    assert caller.state.publishing  # the connection is still up
    assert caller.media(T0 + 50) == (OpenSession(test=False), StatusChange(LIVE, "started", None))
    assert caller.state.session_id == 2


def test_a_reconnect_never_shortens_the_grace() -> None:
    caller = _dropped()
    caller.accept(T0 + 1, grace=5)  # the owner lowered the setting meanwhile
    assert caller.state.grace_until == T0 + G


def test_the_grace_is_a_per_channel_setting() -> None:
    caller = Caller()
    caller.live_at(T0 - 10)
    caller.end(T0, EndKind.ABRUPT, grace=120)
    assert caller.state.grace_until == T0 + 120
    assert caller.tick(T0 + 119) == ()


@pytest.mark.parametrize("grace", [0.0, -1.0, float("nan"), float("inf")])
def test_without_a_usable_grace_an_abrupt_end_goes_offline_at_once(grace: float) -> None:
    caller = Caller()
    caller.live_at(T0 - 10)
    assert caller.end(T0, EndKind.ABRUPT, grace=grace) == (
        CloseSession(1, EndReason.GRACE_EXPIRED),
        StatusChange(OFFLINE, "grace expired", None),
    )
    assert caller.state.status is OFFLINE


# --- Paths through the machine ------------------------------------------------------------------


def test_a_clean_stop_goes_offline_at_once() -> None:
    caller = Caller()
    assert caller.accept(T0) == (OpenSession(test=False),)
    assert caller.state.status is OFFLINE  # a publish alone is not live
    caller.media(T0 + 1)
    assert caller.end(T0 + 60, EndKind.CLEAN) == (
        CloseSession(1, EndReason.STOPPED),
        StatusChange(OFFLINE, "stopped", None),
    )
    assert caller.state == ChannelState(since=T0 + 60)


def test_a_stall_then_resume_keeps_the_session() -> None:
    caller = Caller()
    caller.live_at(T0)
    assert caller.stall(T0 + 10) == (StatusChange(RECONNECTING, "media stalled", T0 + 10 + G),)
    assert caller.media(T0 + 20) == (StatusChange(LIVE, "resumed", None),)
    assert caller.state.session_id == 1
    assert caller.state.grace_until is None
    assert [c.status for c in caller.changes] == [LIVE, RECONNECTING, LIVE]


def test_a_stall_that_never_recovers_closes_as_timeout() -> None:
    caller = Caller()
    caller.live_at(T0)
    caller.stall(T0 + 10)
    assert caller.end(T0 + 15, EndKind.ABRUPT) == ()  # the drop the stall led to
    assert caller.state.grace_until == T0 + 10 + G
    caller.tick(T0 + 10 + G)
    assert caller.closed == [(1, EndReason.TIMEOUT)]


def test_a_stalled_then_cleanly_stopped_stream_is_stopped() -> None:
    caller = Caller()
    caller.live_at(T0)
    caller.stall(T0 + 10)
    caller.end(T0 + 11, EndKind.CLEAN)
    assert caller.closed == [(1, EndReason.STOPPED)]
    assert caller.state.status is OFFLINE


@pytest.mark.parametrize("path", ["clean", "stall", "abrupt", "kicked", "node", "takeover"])
def test_test_mode_shows_testing_and_never_live(path: str) -> None:
    caller = Caller()
    caller.live_at(T0, test=True)
    now = T0 + 10
    if path == "clean":
        caller.end(now, EndKind.CLEAN)
    elif path == "stall":
        caller.stall(now)
        caller.media(now + 1)
    elif path in ("abrupt", "kicked"):
        caller.end(now, EndKind(path))
        caller.accept(now + 1, test=False)  # even without "?test" on the reconnect
        caller.media(now + 2)
    elif path == "node":
        caller.lost(now)
        caller.accept(now + 1, test=False)
        caller.media(now + 2)
    else:
        caller.accept(now, test=False)
        caller.end(now, EndKind.TAKEN_OVER)
        caller.media(now + 1)
    caller.tick(now + 100)
    assert LIVE not in {change.status for change in caller.changes}
    assert TESTING in {change.status for change in caller.changes}
    assert len(caller.closed) <= 1


def test_a_test_flag_applies_to_the_next_session() -> None:
    caller = Caller()
    caller.live_at(T0, test=True)
    caller.end(T0 + 10, EndKind.CLEAN)
    caller.live_at(T0 + 20, test=False)
    assert [c.status for c in caller.changes] == [TESTING, OFFLINE, LIVE]


def test_a_kicked_encoder_that_stays_away_closes_as_kicked() -> None:
    caller = Caller()
    caller.live_at(T0)
    assert caller.end(T0 + 10, EndKind.KICKED) == (
        StatusChange(RECONNECTING, "kicked", T0 + 10 + G),
    )
    caller.tick(T0 + 10 + G)
    assert caller.closed == [(1, EndReason.KICKED)]
    assert caller.changes[-1] == StatusChange(OFFLINE, "kicked", None)


def test_a_kicked_encoder_may_come_back_within_grace() -> None:
    caller = Caller()
    caller.live_at(T0)
    caller.end(T0 + 10, EndKind.KICKED)
    caller.accept(T0 + 12)
    caller.media(T0 + 13)
    assert (caller.state.status, caller.state.session_id, caller.closed) == (LIVE, 1, [])


def test_a_revoked_key_ends_the_session_at_once() -> None:
    caller = Caller()
    caller.live_at(T0)
    assert caller.end(T0 + 10, EndKind.REVOKED) == (
        CloseSession(1, EndReason.KEY_REVOKED),
        StatusChange(OFFLINE, "key revoked", None),
    )


def test_node_loss_then_a_reconnect_within_grace_keeps_the_session() -> None:
    caller = Caller()
    caller.live_at(T0)
    assert caller.lost(T0 + 10) == (StatusChange(RECONNECTING, "node lost", T0 + 10 + G),)
    assert not caller.state.publishing
    caller.accept(T0 + 15)  # on another node
    caller.media(T0 + 16)
    assert (caller.state.status, caller.state.session_id, caller.closed) == (LIVE, 1, [])


def test_node_loss_without_a_reconnect_closes_as_node_lost() -> None:
    caller = Caller()
    caller.live_at(T0)
    caller.lost(T0 + 10)
    caller.end(T0 + 11, EndKind.ABRUPT)  # a late report from the lost node: ignored
    caller.tick(T0 + 10 + G)
    assert caller.closed == [(1, EndReason.NODE_LOST)]
    assert caller.changes[-1] == StatusChange(OFFLINE, "node lost", None)


def test_node_loss_while_waiting_for_a_dropped_encoder_changes_nothing() -> None:
    caller = _dropped()
    assert caller.lost(T0 + 5) == ()
    assert caller.state.pending_reason is EndReason.GRACE_EXPIRED


def test_a_takeover_keeps_the_session_whatever_order_the_ends_arrive() -> None:
    for end_first in (False, True):
        caller = Caller()
        caller.live_at(T0)
        if end_first:
            caller.end(T0 + 10, EndKind.TAKEN_OVER)
        assert caller.accept(T0 + 10) == (ContinueSession(1),)
        if not end_first:
            caller.end(T0 + 10, EndKind.TAKEN_OVER)
        assert caller.state.publishing  # the new publisher
        caller.media(T0 + 11)
        assert caller.changes == [StatusChange(LIVE, "started", None)]  # no blip
        caller.end(T0 + 20, EndKind.CLEAN)
        assert caller.closed == [(1, EndReason.STOPPED)]


def test_duplicate_reports_change_nothing() -> None:
    caller = Caller()
    caller.live_at(T0)
    assert caller.media(T0 + 1) == ()
    caller.end(T0 + 2, EndKind.ABRUPT)
    state = caller.state
    assert caller.end(T0 + 3, EndKind.ABRUPT) == ()
    assert caller.media(T0 + 3) == ()  # from the connection that is gone
    assert caller.stall(T0 + 3) == ()
    assert caller.state == state


# --- StatusBook ------------------------------------------------------------------------------


def _book_events() -> list[StatusChanged]:
    caller = Caller()
    caller.live_at(T0)
    caller.stall(T0 + 10)
    caller.media(T0 + 12)
    caller.end(T0 + 20, EndKind.ABRUPT)
    caller.accept(T0 + 25)
    caller.media(T0 + 26)
    caller.end(T0 + 40, EndKind.KICKED)
    caller.tick(T0 + 40 + G)
    caller.live_at(T0 + 100, test=True)
    caller.lost(T0 + 110)
    return caller.events


@given(st.data())
def test_the_book_ignores_duplicates_and_out_of_order_events(data: st.DataObject) -> None:
    events = _book_events()
    in_order = StatusBook()
    assert all(in_order.apply(event) for event in events)
    noisy = data.draw(st.permutations(events + data.draw(st.lists(st.sampled_from(events)))))
    book = StatusBook()
    accepted = [book.apply(event) for event in noisy]
    assert book.status(7) == in_order.status(7) == events[-1]
    for now in (T0 + 110, T0 + 125, T0 + 140):
        assert book.view(7, now=now) == in_order.view(7, now=now)
    assert sum(accepted) <= len(events)  # each event counted once at most


def test_the_book_shows_the_grace_left_decreasing_with_now() -> None:
    book = StatusBook()
    book.apply(StatusChanged(7, "reconnecting", 1, T0, grace_until=T0 + G, seq=5))
    assert book.view(7, now=T0) == (RECONNECTING, G)
    assert book.view(7, now=T0 + 10) == (RECONNECTING, G - 10)
    assert book.view(7, now=T0 + G - 0.5) == (RECONNECTING, 0.5)
    assert book.view(7, now=T0 + G) == (OFFLINE, None)  # expired by the rules already
    book.apply(StatusChanged(7, "live", 1, T0 + 5, seq=6))
    assert book.view(7, now=T0 + G) == (LIVE, None)


def test_the_book_knows_nothing_of_unknown_channels() -> None:
    book = StatusBook()
    assert book.status(8) is None
    assert book.view(8, now=T0) == (OFFLINE, None)


def test_the_book_keeps_channels_apart() -> None:
    book = StatusBook()
    assert book.apply(StatusChanged(7, "live", 1, T0, seq=9))
    assert book.apply(StatusChanged(8, "testing", 2, T0, seq=1))  # seq is per channel
    assert book.view(7, now=T0) == (LIVE, None)
    assert book.view(8, now=T0) == (TESTING, None)


def test_unnumbered_events_count_only_when_newer() -> None:
    book = StatusBook()
    assert book.apply(StatusChanged(7, "live", 1, T0, seq=3))
    assert not book.apply(StatusChanged(7, "offline", 1, T0 - 1))  # older than shown
    assert not book.apply(StatusChanged(7, "offline", 1, T0))  # not newer
    assert book.apply(StatusChanged(7, "offline", 1, T0 + 1))
    assert not book.apply(StatusChanged(7, "offline", 1, T0 + 1))  # its duplicate
    assert not book.apply(StatusChanged(7, "live", 1, T0 + 0.5, seq=4))  # older than shown
    assert not book.apply(StatusChanged(7, "live", 1, T0 + 2, seq=4))  # seq 4 seen already
    assert book.apply(StatusChanged(7, "live", 2, T0 + 3, seq=5))
    assert book.view(7, now=T0 + 3) == (LIVE, None)


def test_the_book_ignores_statuses_it_does_not_know() -> None:
    book = StatusBook()
    assert not book.apply(StatusChanged(7, "paused", 1, T0, seq=1))
    assert book.status(7) is None


def test_seeding_then_live_events() -> None:
    book = StatusBook()
    book.seed(
        [
            StatusChanged(8, "offline", 3, T0 - 50, reason="stopped", seq=12),
            StatusChanged(7, "reconnecting", 1, T0, grace_until=T0 + G, seq=4),
            StatusChanged(7, "live", 1, T0 - 10, seq=2),  # older, in any order
        ]
    )
    assert book.view(7, now=T0 + 20) == (RECONNECTING, G - 20)
    assert book.view(8, now=T0) == (OFFLINE, None)
    assert not book.apply(StatusChanged(7, "live", 1, T0 - 10, seq=2))  # the bus replays it
    assert book.apply(StatusChanged(7, "live", 1, T0 + 21, reason="resumed", seq=5))
    assert book.view(7, now=T0 + 22) == (LIVE, None)


def test_status_changed_round_trips_through_the_codec() -> None:
    event = status_event(
        7, StatusChange(RECONNECTING, "node lost", T0 + G), session_id=3, at=T0, node="n"
    )
    assert event == StatusChanged(7, "reconnecting", 3, T0, T0 + G, "node lost", "n", 0)
    assert decode_event(encode_event(event)) == event


# --- Properties ------------------------------------------------------------------------------

STEP = st.tuples(
    st.sampled_from(["accept", "media", "stall", "end", "lost", "tick"]),
    st.integers(0, 70).map(lambda n: n / 2),  # half seconds: grace boundaries are hit exactly
    st.booleans(),
    st.sampled_from(list(EndKind)),
    st.sampled_from([0.0, 0.5, 3.0, 30.0]),
)


@settings(max_examples=400)
@given(st.lists(STEP, max_size=60))
def test_any_sequence_of_inputs_keeps_the_invariants(
    steps: list[tuple[str, float, bool, EndKind, float]],
) -> None:
    caller = Caller()
    now = since = 0.0
    for name, dt, test, kind, grace in steps:
        now += dt
        caller.step(name, now, test=test, kind=kind, grace=grace)
        state = caller.state
        check_invariants(state, now)
        # At most one session, and it is the one the state names.
        assert list(caller.open) == ([] if state.session_id is None else [state.session_id])
        # Consumers rebuild exactly what the machine holds from the StatusChanges.
        assert caller.seen == (state.status, state.grace_until)
        assert state.since >= since
        since = state.since
        # After a tick, nothing is left waiting past its grace.
        ticked = tick(state, now=now).state
        check_invariants(ticked, now)
        assert ticked.status is not RECONNECTING or now < (ticked.grace_until or 0)


@given(st.lists(STEP, max_size=40), st.randoms(use_true_random=False))
def test_the_book_agrees_with_the_machine(
    steps: list[tuple[str, float, bool, EndKind, float]], rng: random.Random
) -> None:
    caller = Caller()
    now = 0.0
    for name, dt, test, kind, grace in steps:
        now += dt
        caller.step(name, now, test=test, kind=kind, grace=grace)
    events = caller.events + rng.sample(caller.events, len(caller.events) // 2)
    rng.shuffle(events)
    book = StatusBook()
    book.seed(events)
    status, left = book.view(7, now=now)
    state = tick(caller.state, now=now).state
    assert status is state.status
    assert left == (None if state.grace_until is None else state.grace_until - now)
