"""Fan-out to dashboards: bounded per page, ordered, and a chart history that is capped."""

from __future__ import annotations

from stream_sync.api import watch as fanout
from stream_sync.state.interfaces import PublishEnded, StatusChanged, StreamStats


def stats(channel_id: int, at: float, video: float = 2000.0) -> StreamStats:
    measured = {"bitrate_1s": {"video": video, "audio": 128.0, "total": video + 128.0}}
    return StreamStats(channel_id, 1, "n", at, {}, {}, measured, {})


def test_only_the_channels_pages_hear_its_events() -> None:
    watchers = fanout.ChannelWatchers()
    with watchers.watch(1) as mine, watchers.watch(2) as other:
        watchers.dispatch(StatusChanged(1, "live", 5, 100.0, reason="started", seq=3))
        watchers.dispatch(stats(1, 101.0), lambda: {"uptime": 1.0})
        watchers.dispatch(PublishEnded(1, "k", "c", 5, "why", 0, 0, 0, None, None))
        assert other.queue.empty()
        first, second, third = (mine.queue.get_nowait() for _ in range(3))
    assert (first["type"], first["status"], first["seq"]) == ("status", "live", 3)
    assert (second["stats"], second["point"]) == ({"uptime": 1.0}, [101.0, 2000.0, 128.0])
    assert (third["type"], third["stats"]) == ("stats", None)  # the publish ended


def test_a_page_that_falls_behind_is_marked_lagged_not_buffered() -> None:
    watchers = fanout.ChannelWatchers()
    with watchers.watch(1) as slow:
        for second in range(fanout.QUEUE_SIZE + 10):
            watchers.dispatch(stats(1, float(second)), None)
        assert slow.queue.qsize() == fanout.QUEUE_SIZE
        assert slow.lagged.is_set()


def test_history_keeps_the_latest_points_in_order() -> None:
    watchers = fanout.ChannelWatchers()
    for second in range(fanout.HISTORY_POINTS + 50):
        watchers.dispatch(stats(1, float(second), video=float(second)))
    watchers.dispatch(stats(1, 3.0))  # out of order: not charted
    points = watchers.history(1)
    assert len(points) == fanout.HISTORY_POINTS
    assert [points[0][0], points[-1][0]] == [50.0, fanout.HISTORY_POINTS + 49.0]
    assert watchers.history(2) == []


def test_leaving_unregisters_the_page() -> None:
    watchers = fanout.ChannelWatchers()
    with watchers.watch(1) as page:
        pass
    watchers.dispatch(StatusChanged(1, "offline", None, 1.0))
    assert page.queue.empty()
