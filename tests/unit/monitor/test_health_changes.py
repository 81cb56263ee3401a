"""Health changes are announced once they settle: no flapping, no start-up noise."""

from __future__ import annotations

from stream_sync.monitor.health_changes import HealthSettling
from stream_sync.state.interfaces import StreamStats


def stats(overall: str, session_id: int | None = 1, *codes: str) -> StreamStats:
    issues = [{"code": code, "severity": "error"} for code in codes]
    return StreamStats(7, session_id, "node-1", 0.0, {}, health={"overall": overall,
                                                                 "issues": issues})  # fmt: skip


def test_a_value_is_announced_after_it_held_for_the_settle_time() -> None:
    settling = HealthSettling(settle=10)
    assert settling.observe(stats("no_data"), 0) is None  # the first seconds: never
    assert settling.observe(stats("good"), 1) is None
    assert settling.observe(stats("good"), 10) is None
    first = settling.observe(stats("good"), 11)
    assert first is not None
    assert (first.overall, first.previous, first.at) == ("good", None, 11)
    assert settling.observe(stats("good"), 30) is None  # unchanged


def test_flapping_at_a_threshold_announces_nothing() -> None:
    settling = HealthSettling(settle=10)
    settling.start(7, 1, "good")  # announced before (a restarted monitor read it back)
    for second in range(0, 60, 3):
        assert settling.observe(stats("ok" if second % 2 else "good"), second) is None
    assert settling.observe(stats("bad", 1, "no_video"), 60) is None
    change = settling.observe(stats("bad", 1, "no_video"), 70)
    assert change is not None
    assert (change.overall, change.previous, change.issues) == ("bad", "good", ["no_video"])


def test_a_new_session_starts_afresh() -> None:
    settling = HealthSettling(settle=0)
    assert settling.observe(stats("bad", 1), 0) is not None
    again = settling.observe(stats("bad", 2), 1)
    assert again is not None
    assert (again.session_id, again.previous) == (2, None)


def test_streams_not_heard_of_are_forgotten() -> None:
    settling = HealthSettling(settle=0)
    settling.observe(stats("good"), 0)
    settling.prune(60)
    assert settling.knows(7, 1)
    settling.prune(121)
    assert not settling.knows(7, 1)


def test_a_change_that_could_not_be_staged_is_announced_again() -> None:
    settling = HealthSettling(settle=10)
    settling.observe(stats("bad"), 0)
    lost = settling.observe(stats("bad"), 10)
    assert lost is not None
    settling.retract(lost)  # the database was away
    again = settling.observe(stats("bad"), 11)
    assert again is not None
    assert (again.overall, again.previous) == ("bad", None)
