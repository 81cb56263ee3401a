"""What a live stream feeds on this node besides the monitor: pushes and its recording.

A channel's outputs outlive one publish. When the encoder drops (a crash, a network
blip) and the channel waits in Reconnecting, they are parked for the grace period,
still connected (a push) or still open (a file). The channel's next publish on this
node picks them up at its first keyframe, with timestamps that go on from where
they stopped: viewers on the other platforms see a freeze, not an ended stream, and
the session's recording goes on in the same file. A clean stop, a kick, a revoked
key, a publish of the channel on another node or the end of the grace ends them.

What a channel feeds is read from the database when its publish starts (its record
switch and enabled targets, `outputs.plan`), after the admissions under way, and
again when the API says it changed (`OutputsChanged`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..background import Background
from ..monitor.status import EndKind
from ..outputs.destinations import PushTarget
from ..outputs.plan import NOTHING, ChannelOutputs

if TYPE_CHECKING:
    from .protocol import RtmpProtocol

log = logging.getLogger("stream_sync.outputs")

LOAD_AFTER_ADMISSIONS = 2.0  # seconds a starting publish lets admissions go first
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # reading them again while the database is away


class Sink(Protocol):
    """Something a live stream's media goes to, beside viewers: a push, a file."""

    sent_bytes: int  # media bytes sent or written so far: the node's outgoing load

    def media(self, type_id: int, timestamp: int, payload: bytes, keyframe: bool) -> None:
        """Every audio and video message of the source; never waits."""

    def attach(self, source: RtmpProtocol, gap_ms: int | None) -> None:
        """A publish feeds it: the first (``gap_ms`` None) or one after a reconnect."""

    def detach(self) -> None:
        """The source is gone and may come back: hold on, send nothing."""

    async def close(self) -> None:
        """The stream is over for this output: finish cleanly."""

    def status(self, now: float) -> dict[str, Any]:
        """What the dashboard shows of it, JSON-safe, with no secret."""


class Timeline:
    """Output timestamps: from 0 on a new connection or file, going on across reconnects.

    A reconnecting encoder starts its clock again at 0; the output continues from
    its last timestamp plus the time the source was away, as a player expects.
    """

    __slots__ = ("base", "last", "offset")

    def __init__(self) -> None:
        self.base: int | None = None  # the source timestamp output time ``offset`` stands for
        self.offset = 0
        self.last = 0

    def restart(self) -> None:
        self.base, self.offset, self.last = None, 0, 0

    def resume(self, gap_ms: int) -> None:
        self.base, self.offset = None, self.last + max(0, gap_ms)

    def map(self, timestamp: int) -> int:
        base = self.base
        if base is None:
            self.base = base = timestamp
        out = self.offset + timestamp - base
        out = max(out, self.offset)  # audio from just before the keyframe a resume starts at
        self.last = max(self.last, out)
        return out


EARLY_BYTES = 16 * 1024 * 1024  # media kept while a starting publish's outputs load


class _Early:
    """The media from a starting publish's first keyframe until its outputs are known.

    Reading the database takes a moment (longer in a storm, behind the admissions);
    the encoder's first keyframe comes right after Publish.Start. A recording that
    began at the next one would miss a GOP: the sinks made by the first load are fed
    this first. Bounded; dropped at once by the first load.
    """

    sent_bytes = 0

    def __init__(self) -> None:
        self.kept: list[tuple[int, int, bytes, bool]] = []
        self._bytes = 0

    def media(self, type_id: int, timestamp: int, payload: bytes, keyframe: bool) -> None:
        if not self.kept and not keyframe:
            return
        self._bytes += len(payload)
        if self._bytes > EARLY_BYTES:
            self.kept.clear()  # a GOP that long is not worth keeping: from the next one
            self._bytes = 0
            return
        self.kept.append((type_id, timestamp, payload, keyframe))

    def attach(self, source: RtmpProtocol, gap_ms: int | None) -> None:
        source.attach_sink(self)

    def detach(self) -> None:
        self.kept.clear()

    async def close(self) -> None:
        self.kept.clear()

    def status(self, now: float) -> dict[str, Any]:
        return {}


SinkFactory = Callable[[Hashable, "RtmpProtocol", str], Sink]
Loader = Callable[[int], Awaitable[ChannelOutputs]]


@dataclass(eq=False)
class _Channel:
    channel_id: int
    name: str
    source: RtmpProtocol | None
    sinks: dict[Hashable, Sink] = field(default_factory=dict)
    parked_at: float | None = None
    expiry: asyncio.TimerHandle | None = None
    loads: int = 0  # reloads asked for; a slower older load does not win
    early: _Early | None = None  # until the first load is applied


RECORD = "record"  # the recording's key among a channel's sinks


class OutputsHub:
    """Every channel's outputs on this ingest process.

    ``make`` builds a sink for a key: a `PushTarget` (the operator's or the channel's)
    or `RECORD`. ``load`` reads what a channel feeds; without it (no database) only
    the operator's targets are pushed.
    """

    def __init__(
        self,
        *,
        make: SinkFactory,
        global_targets: Sequence[PushTarget] = (),
        load: Loader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make = make
        self.global_targets = tuple(global_targets)
        self._load = load
        self._clock = clock
        self._channels: dict[int, _Channel] = {}
        self._closing = Background(log)  # sinks saying goodbye
        self._retired_bytes = 0  # sent by sinks since closed
        self._loading = Background(log)  # reads of what channels feed

    def started(self, proto: RtmpProtocol, channel_id: int, channel_name: str) -> None:
        entry = self._channels.get(channel_id)
        if entry is not None:  # parked, or taken over on this node: the outputs go on
            gap = 0
            if entry.parked_at is not None:
                gap = int((self._clock() - entry.parked_at) * 1000)
                log.info("channel=%s outputs resume after %d ms", channel_name, gap)
            if entry.expiry is not None:
                entry.expiry.cancel()
            entry.source, entry.parked_at, entry.expiry, entry.name = (
                proto,
                None,
                None,
                channel_name,
            )
            for sink in entry.sinks.values():
                sink.attach(proto, gap)
            self._reload(entry)  # what changed while it was away
            return
        entry = _Channel(channel_id, channel_name, proto)
        self._channels[channel_id] = entry
        self._apply(entry, NOTHING)  # the operator's targets need no database
        if self._load is not None:
            entry.early = _Early()
            entry.early.attach(proto, None)
            self._reload(entry, after_admissions=True)

    def ended(self, proto: RtmpProtocol, channel_id: int, kind: EndKind, grace: float) -> None:
        entry = self._channels.get(channel_id)
        if entry is None or entry.source is not proto:
            return
        if kind is EndKind.ABRUPT and grace > 0 and entry.sinks:
            entry.source, entry.parked_at = None, self._clock()
            for sink in entry.sinks.values():
                sink.detach()
            loop = asyncio.get_running_loop()
            entry.expiry = loop.call_later(grace, self._expire, entry)
            log.info("channel=%s outputs parked for %g s of grace", entry.name, grace)
        else:
            self._drop(entry)

    def changed(self, channel_id: int) -> None:
        """The API changed the channel's targets or record switch."""
        entry = self._channels.get(channel_id)
        if entry is not None and entry.source is not None and self._load is not None:
            self._reload(entry)

    def elsewhere(self, channel_id: int) -> None:
        """The channel went live on another node: parked outputs here are over."""
        entry = self._channels.get(channel_id)
        if entry is not None and entry.source is None:
            self._drop(entry)

    def status(self, channel_id: int, now: float) -> list[dict[str, Any]]:
        entry = self._channels.get(channel_id)
        if entry is None:
            return []
        return [sink.status(now) for sink in entry.sinks.values()]

    def sent_bytes(self) -> int:
        """Media bytes every output of this process sent or wrote, ever: for capacity."""
        live = sum(sink.sent_bytes for e in self._channels.values() for sink in e.sinks.values())
        return self._retired_bytes + live

    def sinks(self, channel_id: int) -> list[Sink]:
        entry = self._channels.get(channel_id)
        return list(entry.sinks.values()) if entry is not None else []

    async def close(self) -> None:
        """End every output (shutdown): pushes say goodbye, files are finished."""
        for entry in list(self._channels.values()):
            self._drop(entry)
        await self._loading.cancel()  # one may be waiting for the database
        await self._closing.settle()

    # Inside -------------------------------------------------------------------------

    def _reload(self, entry: _Channel, *, after_admissions: bool = False) -> None:
        entry.loads += 1
        self._loading.spawn(
            self._reload_now(entry, entry.loads, after_admissions), "load a channel's outputs"
        )

    async def _reload_now(self, entry: _Channel, load: int, after_admissions: bool) -> None:
        if self._load is None:
            return
        source = entry.source
        if after_admissions and source is not None:
            await source.server.after_admissions(LOAD_AFTER_ADMISSIONS)
        delay = RETRY_FIRST
        while True:
            try:
                outputs = await self._load(entry.channel_id)
                break
            except Exception as exc:  # the database is away: the operator's targets still go
                if delay == RETRY_FIRST:
                    log.warning(
                        "channel=%s outputs wait for the database (%s)",
                        entry.name,
                        type(exc).__name__,
                    )
                    self._forget_early(entry)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            if not self._current(entry, load):
                return
        if self._current(entry, load):
            self._apply(entry, outputs)
            self._forget_early(entry)

    def _current(self, entry: _Channel, load: int) -> bool:
        """Whether a load still counts: no newer one asked for, the entry not dropped."""
        return entry.loads == load and self._channels.get(entry.channel_id) is entry

    def _forget_early(self, entry: _Channel) -> None:
        early, entry.early = entry.early, None
        if early is not None and entry.source is not None:
            entry.source.detach_sink(early)

    def _apply(self, entry: _Channel, outputs: ChannelOutputs) -> None:
        """Start what is wanted and missing, close what is there and not wanted."""
        source = entry.source
        if source is None:
            return
        wanted: list[Hashable] = [*self.global_targets, *outputs.targets]
        if outputs.record:
            wanted.append(RECORD)
        for key in [key for key in entry.sinks if key not in wanted]:
            self._retire(entry.sinks.pop(key))
        early = entry.early.kept if entry.early is not None else []
        for key in wanted:
            if key not in entry.sinks:
                try:
                    sink = self._make(key, source, entry.name)
                except Exception:
                    log.exception("channel=%s output not started", entry.name)
                    continue
                entry.sinks[key] = sink
                sink.attach(source, None)
                for type_id, timestamp, payload, keyframe in early:
                    sink.media(type_id, timestamp, payload, keyframe)

    def _expire(self, entry: _Channel) -> None:
        if entry.source is None and self._channels.get(entry.channel_id) is entry:
            log.info("channel=%s grace over: outputs end", entry.name)
            self._drop(entry)

    def _drop(self, entry: _Channel) -> None:
        if self._channels.get(entry.channel_id) is entry:
            del self._channels[entry.channel_id]
        self._forget_early(entry)
        if entry.expiry is not None:
            entry.expiry.cancel()
        entry.source = None
        entry.loads += 1  # a load under way applies to nothing
        for sink in entry.sinks.values():
            self._retire(sink)
        entry.sinks.clear()

    def _retire(self, sink: Sink) -> None:
        self._retired_bytes += sink.sent_bytes
        self._closing.spawn(sink.close(), "finish an output")
