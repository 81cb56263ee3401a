"""When a live stream's next picture is due: slow by default, fast while watched."""

from __future__ import annotations

import time

from stream_sync.ingest.thumbnails import Thumbnailer, ThumbnailPolicy
from stream_sync.state.inprocess import InProcessThumbnails
from stream_sync.state.interfaces import ThumbnailsWanted


async def test_a_watched_channel_is_pictured_often_until_the_watch_runs_out() -> None:
    thumbnails = Thumbnailer(InProcessThumbnails(), ThumbnailPolicy(interval=30, watched=5))
    now = time.time()
    assert thumbnails.every(7, now) == 30
    thumbnails.want(ThumbnailsWanted([7, 8], now + 6))
    assert (thumbnails.every(7, now), thumbnails.every(8, now), thumbnails.every(9, now)) == (
        5,
        5,
        30,
    )
    thumbnails.want(ThumbnailsWanted([7], now + 2))  # an earlier deadline does not shorten it
    assert thumbnails.every(7, now + 4) == 5
    assert thumbnails.every(7, now + 6) == 30
    await thumbnails.close()


async def test_a_malformed_wish_is_ignored() -> None:
    thumbnails = Thumbnailer(InProcessThumbnails(), ThumbnailPolicy())
    now = time.time()
    thumbnails.want(ThumbnailsWanted("7", now + 6))  # type: ignore[arg-type]
    thumbnails.want(ThumbnailsWanted([None, "8", 9], now + 6))  # type: ignore[list-item]
    thumbnails.want(ThumbnailsWanted([10], "soon"))  # type: ignore[arg-type]
    assert [thumbnails.every(c, now) for c in (7, 8, 9, 10)] == [30, 30, 5, 30]
    await thumbnails.close()


def test_watched_is_never_slower_than_the_default() -> None:
    thumbnails = Thumbnailer(InProcessThumbnails(), ThumbnailPolicy(interval=3, watched=5))
    thumbnails.want(ThumbnailsWanted([1], time.time() + 6))
    assert thumbnails.every(1, time.time()) == 3
    assert ThumbnailPolicy(interval=30, watched=5).ttl == 90
