"""Live thumbnails: when a stream's keyframe is taken, and where its picture goes.

A keyframe leaves the hot path only when a picture is due: the stats round asks the
core for the next one (``capture_keyframe``), which copies that single message. It
is decoded on a thread of its own (monitor/thumbnail.py, about 4 ms of CPU at 720p;
PyAV lets go of the GIL meanwhile, so the event loop keeps reading) and stored for
the API (``ThumbnailStore``). A picture is due every ``interval`` seconds, and every
``watched`` seconds while a dashboard shows the channel (the API's
``ThumbnailsWanted``). One picture per channel at a time: a stream whose previous
picture is still being made is not asked for another.

Pictures are best effort and must never cost the ingest much: they may take at most
``cpu_share`` of the CPU the rest of the process uses, or 0.2 % of a core if that is
more (a budget refilled each round, settled with each picture's measured cost).
That floor and the burst an idle spell saves up are the server's: with ``--workers
N`` each worker has an N-th of them, so more workers do not mean more pictures.
When it runs short, watched channels go first, then the streams whose picture is
oldest; the others wait, so at scale a picture comes less often than ``interval``,
never at the expense of reading the streams (issue 11: b200 +10 %).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import heap
from ..background import Background
from ..monitor.thumbnail import DECODERS, ThumbnailError, render, warm_up
from ..rtmp.events import KeyframeCaptured
from ..state.errors import StateUnavailable
from ..state.inprocess import LogThrottle
from ..state.interfaces import Thumbnail, ThumbnailStore, ThumbnailsWanted

if TYPE_CHECKING:
    from .protocol import RtmpProtocol

log = logging.getLogger("stream_sync.ingest")
ARM_EARLY = 1.0  # seconds: the stats round's period
FIRST_COST = 0.005  # CPU seconds a picture is assumed to cost until one was measured
MAX_SAVED = 0.1  # CPU seconds of budget an idle spell may save up (a burst of ~25)
MIN_RATE = 0.002  # CPU seconds per second pictures may always take (a quiet node)


@dataclass(frozen=True, slots=True)
class ThumbnailPolicy:
    interval: float = 30.0  # seconds between pictures of a live stream; 0: no pictures
    watched: float = 5.0  # seconds between pictures while a dashboard shows the channel
    width: int = 320
    cpu_share: float = 0.06  # of the CPU the rest of the process uses, at most
    processes: int = 1  # ingest processes of the server, sharing its floor and burst

    @property
    def ttl(self) -> float:
        """How long a picture is kept: past a few missed ones, the stream is gone."""
        return 3 * max(self.interval, self.watched)


class Thumbnailer:
    def __init__(
        self,
        store: ThumbnailStore,
        policy: ThumbnailPolicy,
        *,
        cpu_clock: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._store = store
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="thumbnail")
        self._wanted: dict[int, float] = {}  # channel id -> epoch seconds it is watched until
        self._making: set[int] = set()  # channels whose picture is being made
        self._pictures = Background(log)
        self._failures = LogThrottle()
        self.made = 0  # pictures stored, since start
        self.failed = 0
        # The CPU budget: seconds pictures may still spend, refilled from the CPU time
        # the rest of the process used since the last round.
        self.budget = FIRST_COST
        self.spent = 0.0  # CPU seconds all pictures took, measured on their thread
        self.cost = FIRST_COST  # a picture's CPU seconds, a moving average
        self._cpu_clock, self._clock = cpu_clock, clock
        self._cpu_mark, self._round_at = cpu_clock(), clock()
        self._spent_mark = 0.0

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

    async def warm_up(self) -> None:
        """FFmpeg's decoder loaded on the picture thread at start (monitor/thumbnail.py)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, warm_up)

    def every(self, channel_id: int, now: float) -> float:
        """Seconds from this picture of the channel to its next one."""
        if self._wanted.get(channel_id, 0.0) > now:
            return min(self.policy.watched, self.policy.interval)
        return self.policy.interval

    def arm(self, protos: Iterable[RtmpProtocol], now: float) -> None:
        """Once a second: ask the cores of the streams whose picture is due for a keyframe.

        As many as the CPU budget allows, watched channels first, then the stalest.
        """
        cpu, spent, at = self._cpu_clock(), self.spent, self._clock()
        rest = (cpu - self._cpu_mark) - (spent - self._spent_mark)
        processes = max(1, self.policy.processes)
        floor = (at - self._round_at) * MIN_RATE / processes
        refill = max(rest * self.policy.cpu_share, floor)
        self._cpu_mark, self._spent_mark, self._round_at = cpu, spent, at
        self.budget = min(self.budget + refill, MAX_SAVED / processes)
        due: list[tuple[bool, float, RtmpProtocol]] = []
        for proto in protos:
            grant = proto.grant
            if (
                grant is None
                or proto.conn.capture_keyframe  # asked already, waiting for a keyframe
                or proto.video_config is None
                or proto.video_codec not in DECODERS
                or grant.channel_id in self._making
            ):
                continue
            watched = self._wanted.get(grant.channel_id, 0.0) > now
            # A round early: the capture waits for the next keyframe, and the round
            # after this one might come just after a keyframe and miss it.
            if proto.thumbnail_tried + self.every(grant.channel_id, now) <= now + ARM_EARLY:
                due.append((not watched, proto.thumbnail_tried, proto))
        due.sort(key=lambda item: item[:2])
        for _, _, proto in due:
            if self.budget < self.cost:
                break
            self.budget -= self.cost  # settled with the measured cost once it is made
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
        self._pictures.spawn(
            self._make(proto, channel_id, codec, config, event.packet.body, at), "make a picture"
        )

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
        width = self.policy.width

        def make() -> tuple[bytes | ThumbnailError, float]:
            started = time.thread_time()  # this thread's CPU: the picture's true cost
            try:
                picture: bytes | ThumbnailError = render(codec, config, keyframe, width=width)
            except ThumbnailError as exc:
                picture = exc
            heap.trim()  # the decoder's freed tables, stranded between media buffers
            return picture, time.thread_time() - started

        try:
            jpeg, cost = await loop.run_in_executor(self._executor, make)
            self.spent += cost
            self.budget += self.cost - cost  # it was charged the estimate when armed
            self.cost += (cost - self.cost) * 0.2
            if isinstance(jpeg, ThumbnailError):
                raise jpeg
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
        await self._pictures.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
