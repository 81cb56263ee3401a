"""When a live stream's next picture is due: slow by default, fast while watched."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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


@dataclass
class Conn:
    capture_keyframe: bool = False


@dataclass
class Grant:
    channel_id: int


@dataclass
class Stream:
    """What the scheduler reads of a live publish (RtmpProtocol's fields of the same name)."""

    grant: Grant
    conn: Conn = field(default_factory=Conn)
    video_config: bytes | None = b"avcC"
    video_codec: str | None = "avc1"
    thumbnail_tried: float = 0.0


def armed(streams: list[Stream]) -> list[int]:
    return [s.grant.channel_id for s in streams if s.conn.capture_keyframe]


async def test_pictures_stay_within_their_share_of_the_cpu_watched_channels_first() -> None:
    cpu, wall = [0.0], [0.0]
    thumbnails = Thumbnailer(
        InProcessThumbnails(),
        ThumbnailPolicy(interval=30, watched=5, cpu_share=0.1),
        cpu_clock=lambda: cpu[0],
        clock=lambda: wall[0],
    )
    now = time.time()
    streams = [Stream(Grant(channel)) for channel in range(1, 11)]
    streams.append(Stream(Grant(11), video_codec="mp4v"))  # no decoder for it: never asked
    thumbnails.want(ThumbnailsWanted([7], now + 60))

    # A second in which the rest of the process used 0.1 s of CPU: 10 ms for pictures,
    # plus the 5 ms it starts with, at 5 ms a picture (the first estimate).
    cpu[0], wall[0] = 0.1, 1.0
    thumbnails.arm(streams, now)
    assert armed(streams) == [1, 2, 7]  # the watched one first, then the stalest

    # A quiet second: 0.2 % of a core is 2 ms, not enough for another picture yet.
    cpu[0], wall[0] = 0.101, 2.0
    thumbnails.arm(streams, now + 1)
    assert armed(streams) == [1, 2, 7]
    cpu[0], wall[0] = 0.102, 4.0  # two more quiet seconds: 2 + 4 ms, one more picture
    thumbnails.arm(streams, now + 3)
    assert armed(streams) == [1, 2, 3, 7]

    # A long idle spell saves up a burst, not an unbounded one.
    wall[0] = 10_000.0
    thumbnails.arm(streams, now + 4)
    assert len(armed(streams)) == 10  # every stream with a decoder; the budget is not spent
    assert thumbnails.budget <= 0.1
    await thumbnails.close()


async def test_workers_share_the_servers_floor_and_saved_up_burst() -> None:
    """Two workers make the pictures one process would, not twice as many."""
    made = []
    for processes in (1, 2):
        wall = [0.0]
        thumbnails = Thumbnailer(
            InProcessThumbnails(),
            ThumbnailPolicy(interval=30, cpu_share=0.06, processes=processes),
            cpu_clock=lambda: 0.0,
            clock=lambda wall=wall: wall[0],
        )
        streams = [Stream(Grant(channel)) for channel in range(1, 41)]
        wall[0] = 10_000.0  # a long idle spell before the streams came
        thumbnails.arm(streams, time.time())
        made.append(len(armed(streams)))
        assert thumbnails.budget <= 0.1 / processes
        await thumbnails.close()
    one, each_of_two = made
    assert 19 <= one <= 20  # the whole burst: 0.1 s at 5 ms a picture (rounding aside)
    assert abs(2 * each_of_two - one) <= 2
