"""Per-channel fan-out of live events to dashboards, and the recent bitrate they chart.

The live view (live.py) hands every bus event here; each open dashboard holds a
bounded queue for its channel. A dashboard that cannot keep up is dropped rather
than buffered without end: its page reconnects and starts again from a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..state.interfaces import PublishEnded, StatusChanged, StreamStats

HISTORY_POINTS = 600  # ten minutes of once-a-second statistics
QUEUE_SIZE = 256


class Watch:
    """One dashboard's view of one channel: messages in order, or ``lagged``."""

    def __init__(self, channel_id: int) -> None:
        self.channel_id = channel_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.lagged = asyncio.Event()

    def offer(self, message: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.lagged.set()


class ChannelWatchers:
    def __init__(self) -> None:
        self._watches: dict[int, set[Watch]] = {}
        self._history: dict[int, deque[tuple[float, float | None, float | None]]] = {}

    @contextlib.contextmanager
    def watch(self, channel_id: int) -> Iterator[Watch]:
        """Register before reading the snapshot, so no event falls between the two."""
        watch = Watch(channel_id)
        self._watches.setdefault(channel_id, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(channel_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[channel_id]

    def channels(self) -> list[int]:
        """Channels some dashboard shows now."""
        return list(self._watches)

    def history(self, channel_id: int) -> list[list[float | None]]:
        """(epoch seconds, video kbps, audio kbps) of the recent statistics, oldest first."""
        return [list(point) for point in self._history.get(channel_id, ())]

    def dispatch(self, event: object, stats: Callable[[], dict[str, Any]] | None = None) -> None:
        """An event from the bus; ``stats`` gives the live view's entry after a StreamStats,
        asked for only while a dashboard watches the channel (few are, of every stream
        whose statistics pass here each second)."""
        if isinstance(event, StreamStats):
            point = _point(event)
            if point is not None:
                points = self._history.setdefault(event.channel_id, deque(maxlen=HISTORY_POINTS))
                if not points or point[0] > points[-1][0]:
                    points.append(point)
            if event.channel_id in self._watches:
                self._send(
                    event.channel_id,
                    {
                        "type": "stats",
                        "stats": stats() if stats else None,
                        "point": list(point) if point else None,
                    },
                )
        elif isinstance(event, StatusChanged):
            self._send(event.channel_id, status_message(event))
        elif isinstance(event, PublishEnded):
            self._send(event.channel_id, {"type": "stats", "stats": None, "point": None})

    def _send(self, channel_id: int, message: dict[str, Any]) -> None:
        for watch in self._watches.get(channel_id, ()):
            watch.offer(message)


def status_message(event: StatusChanged) -> dict[str, Any]:
    return {
        "type": "status",
        "status": event.status,
        "seq": event.seq,
        "since": event.at,
        "grace_until": event.grace_until,
        "reason": event.reason,
        "session_id": event.session_id,
    }


def _point(event: StreamStats) -> tuple[float, float | None, float | None] | None:
    bitrate = event.measurements.get("bitrate_1s")
    if not isinstance(bitrate, dict):
        return None
    video, audio = bitrate.get("video"), bitrate.get("audio")
    return (
        event.at,
        float(video) if isinstance(video, int | float) else None,
        float(audio) if isinstance(audio, int | float) else None,
    )
