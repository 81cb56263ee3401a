"""What the fault tests drive and what they judge.

Drive: real FFmpeg publishers replaying one pre-encoded file with ``-c copy``
(twenty live x264 encoders would not fit on two cores, a copy costs almost nothing).
Judge: each publish's interval on each node, read from the nodes' logs (so two live
publishers of one channel would show, whatever the database says), and each
session's lifecycle events from the outbox, the record every consumer catches up
from.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from stream_sync.admin import client as admin
from stream_sync.credentials.service import CreatedChannel
from stream_sync.db.models import OutboxEvent, PublishSession
from stream_sync.state.codec import decode_event
from stream_sync.state.interfaces import (
    BusEvent,
    HealthChanged,
    PublishEnded,
    PublishStarted,
    StatusChanged,
)
from tests.cluster.harness import Cluster, Node
from tests.support import ffmpeg_command, run_process

SAMPLE_SECONDS = 4


def sample_command(exe: str, path: Path) -> list[str]:
    """The replayed file: the captures' picture and sine, a keyframe a second, 300 kbit/s."""
    video = ("-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-b:v", "300k")
    return ffmpeg_command(exe, str(path), seconds=SAMPLE_SECONDS, video=video, realtime=False)


def replay_command(exe: str, sample: Path, url: str) -> list[str]:
    """Publish the file in real time, looped until stopped, without encoding anything."""
    quiet, loop = "-hide_banner -nostdin -loglevel error", "-re -stream_loop -1"
    return [exe, *quiet.split(), *loop.split(), "-i", str(sample), "-c", "copy", "-f", "flv", url]


@dataclass
class Publisher:
    channel: CreatedChannel
    node: Node
    process: asyncio.subprocess.Process

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def stop(self) -> None:
        """SIGTERM: FFmpeg ends the publish cleanly (FCUnpublish, deleteStream)."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.process.communicate(), 10)

    async def kill(self) -> None:
        """SIGKILL: the connection just drops, as when the encoder's machine dies."""
        if self.running:
            self.process.kill()
        await self.process.communicate()


class Fleet:
    """The publishers of one test, every one of them killed at the end whatever happened."""

    def __init__(self, cluster: Cluster, exe: str, sample: Path) -> None:
        self.cluster = cluster
        self.exe = exe
        self.sample = sample
        self.publishers: list[Publisher] = []

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        for publisher in self.publishers:
            with contextlib.suppress(ProcessLookupError):
                await publisher.kill()
        if kind is not None:  # what the nodes saw is the first thing to read
            for node in self.cluster.nodes.values():
                print(f"--- log of {node.name}:\n{node.process.log}")

    async def publish(self, node: Node, channel: CreatedChannel) -> Publisher:
        url = f"{node.rtmp_url}/{channel.key}"
        process = await run_process(replay_command(self.exe, self.sample, url))
        publisher = Publisher(channel, node, process)
        self.publishers.append(publisher)
        return publisher

    async def start(self, nodes: Sequence[Node], count: int, prefix: str) -> list[Publisher]:
        """`count` channels live, spread over the nodes in turn; returns once all are live."""
        channels = [await self.cluster.channel(f"{prefix}-{n}") for n in range(count)]
        publishers = [
            await self.publish(nodes[n % len(nodes)], channel) for n, channel in enumerate(channels)
        ]
        await self.until_status({c.channel_id for c in channels}, "live", timeout=30)
        return publishers

    async def until_status(
        self, channel_ids: set[int], status: str, timeout: float = 15, node: str | None = None
    ) -> None:
        """Return once the bus has shown every one of the channels in `status` (by `node`)."""
        bus = self.cluster.bus
        assert bus is not None

        def reached() -> bool:
            seen = {
                e.channel_id
                for e in bus.of(StatusChanged)
                if e.status == status and node in (None, e.node)
            }
            return channel_ids <= seen

        await bus.until(reached, timeout)

    async def retry_until_live(
        self, node: Node, channel: CreatedChannel, timeout: float = 30
    ) -> tuple[Publisher, list[str]]:
        """Publish again each time the node refuses, until it admits; the refusals seen.

        Admission is read from the node's log, not the bus: the bus may be down.
        """
        accepted = rf"publish accepted channel={re.escape(channel.name)} "
        refusals: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                mark = len(node.process.lines)
                attempt = await self.publish(node, channel)
                admitted = asyncio.ensure_future(
                    node.process.wait_for_log(accepted, start=mark, timeout=timeout)
                )
                exited = asyncio.ensure_future(attempt.process.wait())
                await asyncio.wait((admitted, exited), return_when=asyncio.FIRST_COMPLETED)
                if admitted.done():
                    exited.cancel()
                    admitted.result()
                    return attempt, refusals
                admitted.cancel()
                _, err = await attempt.process.communicate()
                refusals.append(err.decode().strip())


def figures(test: str, **values: object) -> None:
    """One line of results for benchmarks/results/faults.md (`pytest -rP` shows it)."""
    print(f"FIGURES {test}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> float:
    """Poll `check` until it holds, for state that announces nothing; the seconds it took."""
    began = time.monotonic()
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 (another process's state: no event to await)
            await asyncio.sleep(0.1)
    return time.monotonic() - began


async def media_bytes(node: Node) -> dict[int, int]:
    """Bytes received so far per channel, from the node's admin socket (no database)."""
    streams = await admin.call(node.data_dir, "streams.list")
    assert isinstance(streams, list)
    return {stream["channel_id"]: stream["bytes_in"] for stream in streams}


# Publish intervals from the nodes' logs -----------------------------------------------------

_LINE = r"^(?P<at>\S+Z) INFO\s+stream_sync\.ingest: conn=(?P<conn>\S+) "
_ACCEPTED = re.compile(
    _LINE + r"peer=\S+ publish accepted channel=(?P<channel>\S+) \S+ token=(?P<token>\d+)"
)
_ENDED = re.compile(_LINE + r"publish ended channel=(?P<channel>\S+) \S+ reason=(?P<why>.*)$")


@dataclass
class Publish:
    """One publish on one node, from its "publish accepted" line to its "publish ended" one."""

    node: str
    connection: str
    channel: str
    token: int  # its lease's fencing token
    start: float
    end: float = float("inf")
    reason: str = ""


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def publishes(node: Node, died_at: float | None = None) -> list[Publish]:
    """The node's publishes; those still open end at `died_at` if the node was killed."""
    found: dict[str, Publish] = {}
    for line in node.process.lines:
        if match := _ACCEPTED.search(line):
            found[match["conn"]] = Publish(
                node.name, match["conn"], match["channel"], int(match["token"]), _epoch(match["at"])
            )
        elif (match := _ENDED.search(line)) and match["conn"] in found:
            publish = found[match["conn"]]
            publish.end, publish.reason = _epoch(match["at"]), match["why"].strip("'\"")
    if died_at is not None:
        for publish in found.values():
            publish.end = min(publish.end, died_at)
    return list(found.values())


def overlapping(all_publishes: Iterable[Publish]) -> list[tuple[Publish, Publish]]:
    """Pairs of publishes of one channel that were live at the same time."""
    by_channel: dict[str, list[Publish]] = defaultdict(list)
    for publish in all_publishes:
        by_channel[publish.channel].append(publish)
    pairs = []
    for found in by_channel.values():
        found.sort(key=lambda p: p.start)
        for i, first in enumerate(found):
            pairs += [(first, later) for later in found[i + 1 :] if later.start < first.end]
    return pairs


# Sessions and their events from the database ----------------------------------------------


@dataclass
class Session:
    """A publish_sessions row and the outbox events that name it, in sequence order."""

    id: int
    channel_id: int
    node: str
    ended: bool
    end_reason: str | None
    publishes: int
    fencing_token: int | None
    status: str
    events: list[BusEvent] = field(default_factory=list)

    @property
    def steps(self) -> list[str]:
        """The lifecycle events as short words: "started a", "live: started", "ended a: ...".

        Health announcements (for webhooks) name the session too, but when they come
        depends on how long a stream ran, not on what the fault did: left out here.
        """
        return [_step(event) for event in self.events if not isinstance(event, HealthChanged)]


def _step(event: BusEvent) -> str:
    if isinstance(event, PublishStarted):
        return f"started {event.node}"
    if isinstance(event, PublishEnded):
        return f"ended {event.node}: {event.reason.split(' (')[0]}"
    if isinstance(event, StatusChanged):
        return f"{event.status}: {event.reason}"
    return type(event).__name__


async def sessions(cluster: Cluster) -> list[Session]:
    """Every session with its events; asserts that each channel's outbox seq has no gap."""
    assert cluster.store is not None
    async with cluster.store.sessions() as db:
        rows = (await db.execute(select(PublishSession).order_by(PublishSession.id))).scalars()
        found = {
            row.id: Session(
                row.id,
                row.channel_id,
                row.node,
                row.ended_at is not None,
                row.end_reason,
                row.publishes,
                row.fencing_token,
                row.status,
            )
            for row in rows
        }
        outbox = (
            await db.execute(
                select(OutboxEvent.channel_id, OutboxEvent.seq, OutboxEvent.payload)
                .where(OutboxEvent.channel_id.is_not(None))
                .order_by(OutboxEvent.channel_id, OutboxEvent.seq)
            )
        ).all()
    seqs: dict[int, list[int]] = defaultdict(list)
    for channel_id, seq, payload in outbox:
        seqs[channel_id].append(seq)
        event = decode_event(payload)
        session_id = getattr(event, "session_id", None)
        if session_id in found:
            found[session_id].events.append(event)
    for channel_id, numbers in seqs.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"channel {channel_id}: {numbers}"
    return list(found.values())


async def none_open(cluster: Cluster) -> bool:
    """No session open: every publish ended and every grace ran out."""
    assert cluster.store is not None
    async with cluster.store.sessions() as db:
        left = await db.scalar(
            select(func.count())
            .select_from(PublishSession)
            .where(PublishSession.ended_at.is_(None))
        )
    return left == 0


def errors(nodes: Iterable[Node]) -> list[str]:
    """ERROR lines (and tracebacks) in the nodes' logs: a fault should cost warnings only."""
    return [line for node in nodes for line in node.process.lines if " ERROR " in line]


def outbox_keys(found: Iterable[Session]) -> set[tuple[int, int]]:
    """(channel, seq) of every recorded event: what the bus should have carried."""
    return {(e.channel_id, e.seq) for s in found for e in s.events if hasattr(e, "seq")}
