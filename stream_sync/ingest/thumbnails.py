"""Live thumbnails: when a stream's keyframe is taken, and where its picture goes.

A keyframe leaves the hot path only when a picture is due: the stats round asks the
core for the next one (``capture_keyframe``), which copies that single message. It
is decoded on a thread of its own (monitor/thumbnail.py, about 4 ms of CPU at 720p;
PyAV lets go of the GIL meanwhile, so the event loop keeps reading) and stored for
the API (``ThumbnailStore``). A picture is due every ``interval`` seconds, and every
``watched`` seconds while a dashboard shows the channel (the API's
``ThumbnailsWanted``). One picture per channel at a time: a stream whose previous
picture is still being made is not asked for another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..monitor.thumbnail import DECODERS, ThumbnailError, render
from ..rtmp.events import KeyframeCaptured
from ..state.errors import StateUnavailable
from ..state.inprocess import LogThrottle
from ..state.interfaces import Thumbnail, ThumbnailStore, ThumbnailsWanted

if TYPE_CHECKING:
    from .protocol import RtmpProtocol

log = logging.getLogger("stream_sync.ingest")
ARM_EARLY = 1.0  # seconds: the stats round's period


@dataclass(frozen=True, slots=True)
class ThumbnailPolicy:
    interval: float = 30.0  # seconds between pictures of a live stream; 0: no pictures
    watched: float = 5.0  # seconds between pictures while a dashboard shows the channel
    width: int = 320

    @property
    def ttl(self) -> float:
        """How long a picture is kept: past a few missed ones, the stream is gone."""
        return 3 * max(self.interval, self.watched)


class Thumbnailer:
    def __init__(self, store: ThumbnailStore, policy: ThumbnailPolicy) -> None:
        self.policy = policy
        self._store = store
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="thumbnail")
        self._wanted: dict[int, float] = {}  # channel id -> epoch seconds it is watched until
        self._making: set[int] = set()  # channels whose picture is being made
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = LogThrottle()
        self.made = 0  # pictures stored, since start
        self.failed = 0

    def want(self, event: ThumbnailsWanted) -> None:
        """Dashboards show these channels until ``event.until``."""
        now = time.time()
        for channel_id in [c for c, until in self._wanted.items() if until <= now]:
            del self._wanted[channel_id]
        if not isinstance(event.until, int | float):
            return
        for channel_id in event.channel_ids if isinstance(event.channel_ids, list) else ():
            if isinstance(channel_id, int) and event.until > self._wanted.get(channel_id, 0.0):
                self._wanted[channel_id] = event.until

    def every(self, channel_id: int, now: float) -> float:
        """Seconds from this picture of the channel to its next one."""
        if self._wanted.get(channel_id, 0.0) > now:
            return min(self.policy.watched, self.policy.interval)
        return self.policy.interval

    def arm(self, proto: RtmpProtocol, now: float) -> None:
        """Once a second per live stream: ask its core for the next keyframe if one is due."""
        grant = proto.grant
        if (
            grant is None
            or proto.video_config is None
            or proto.video_codec not in DECODERS
            or grant.channel_id in self._making
        ):
            return
        # A round early: the capture waits for the next keyframe, and the round after
        # this one might come just after a keyframe and miss it.
        if proto.thumbnail_tried + self.every(grant.channel_id, now) <= now + ARM_EARLY:
            proto.conn.capture_keyframe = True

    def captured(self, proto: RtmpProtocol, event: KeyframeCaptured) -> None:
        """The keyframe asked for in ``arm``: make and store its picture, off the loop."""
        grant, config, codec = proto.grant, proto.video_config, proto.video_codec
        if grant is None or config is None or codec != event.packet.codec:
            return  # ended meanwhile, or the codec changed without a new record
        channel_id, at = grant.channel_id, time.time()
        if channel_id in self._making:
            return
        # A failure is retried at the stream's next picture, not at once: a stream
        # whose keyframes do not decode must not cost a decode every second.
        proto.thumbnail_tried = at
        self._making.add(channel_id)
        task = asyncio.get_running_loop().create_task(
            self._make(proto, channel_id, codec, config, event.packet.body, at)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _make(
        self,
        proto: RtmpProtocol,
        channel_id: int,
        codec: str,
        config: bytes,
        keyframe: bytes,
        at: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            jpeg = await loop.run_in_executor(
                self._executor, lambda: render(codec, config, keyframe, width=self.policy.width)
            )
            await self._store.put(channel_id, Thumbnail(jpeg, at), self.policy.ttl)
        except (ThumbnailError, StateUnavailable) as exc:
            self.failed += 1
            self._failures.log(
                log, logging.WARNING, "no thumbnail for channel %d: %s", channel_id, exc
            )
        else:
            self.made += 1
            proto.thumbnail_at = at
        finally:
            self._making.discard(channel_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
