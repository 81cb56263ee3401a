"""The outputs hub: what a channel feeds, parked through a reconnect within grace."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from types import SimpleNamespace
from typing import Any

import pytest

from stream_sync.ingest.outputs import RECORD, OutputsHub, Timeline
from stream_sync.monitor.status import EndKind
from stream_sync.outputs.destinations import PushTarget
from stream_sync.outputs.plan import ChannelOutputs

GLOBAL = PushTarget("packager.local", 1935, "in", "{channel}")
YOUTUBE = PushTarget("a.rtmp.youtube.com", 1935, "live2", "k1", target_id=1, name="YouTube")


class Recorded:
    """A sink that writes down what the hub asks of it."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.calls: list[tuple[str, Any]] = []
        self.sent_bytes = 0

    def media(self, type_id: int, timestamp: int, payload: bytes, keyframe: bool) -> None:
        self.calls.append(("media", timestamp))

    def attach(self, source: Any, gap_ms: int | None) -> None:
        self.calls.append(("attach", (source.id, gap_ms)))

    def detach(self) -> None:
        self.calls.append(("detach", None))

    async def close(self) -> None:
        self.calls.append(("close", None))

    def status(self, now: float) -> dict[str, Any]:
        return {"key": str(self.key)}


class Harness:
    def __init__(self, outputs: ChannelOutputs | None = None) -> None:
        self.made: list[Recorded] = []
        self.now = 100.0
        self.outputs = outputs or ChannelOutputs()
        self.loaded = asyncio.Event()
        self.hub = OutputsHub(
            make=self.make, global_targets=[GLOBAL], load=self.load, clock=lambda: self.now
        )

    def make(self, key: Hashable, source: Any, channel_name: str) -> Recorded:
        sink = Recorded(key)
        self.made.append(sink)
        return sink

    async def load(self, channel_id: int) -> ChannelOutputs:
        self.loaded.set()
        return self.outputs

    async def settle(self) -> None:
        await asyncio.sleep(0)  # the load's task starts
        await self.loaded.wait()
        self.loaded.clear()
        for _ in range(3):
            await asyncio.sleep(0)


def source(name: str) -> Any:
    """What the hub needs of a publish: its id, its sinks, the admissions to wait for."""

    async def no_wait(limit: float) -> None:
        return None

    sinks: list[Any] = []
    server = SimpleNamespace(after_admissions=no_wait)
    return SimpleNamespace(
        id=name, sinks=sinks, server=server, attach_sink=sinks.append, detach_sink=sinks.remove
    )


async def test_a_publish_feeds_the_operators_and_the_channels_outputs() -> None:
    harness = Harness(ChannelOutputs(record=True, targets=(YOUTUBE,)))
    first = source("c1")
    harness.hub.started(first, 7, "studio")
    assert [sink.key for sink in harness.made] == [GLOBAL]  # no database needed for it
    await harness.settle()
    assert [sink.key for sink in harness.made] == [GLOBAL, YOUTUBE, RECORD]
    assert all(sink.calls == [("attach", ("c1", None))] for sink in harness.made)
    assert len(harness.hub.status(7, 0.0)) == 3


async def test_an_abrupt_end_parks_and_a_reconnect_resumes_with_the_gap() -> None:
    harness = Harness()
    first, second = source("c1"), source("c2")
    harness.hub.started(first, 7, "studio")
    await harness.settle()
    [push] = harness.made
    harness.hub.ended(first, 7, EndKind.ABRUPT, grace=30)
    assert push.calls[-1] == ("detach", None)
    harness.now += 2.5
    harness.hub.started(second, 7, "studio")
    assert push.calls[-1] == ("attach", ("c2", 2500))
    await harness.settle()
    assert len(harness.made) == 1  # the same connection goes on
    harness.hub.ended(first, 7, EndKind.ABRUPT, grace=30)  # late news of the old one
    assert push.calls[-1] == ("attach", ("c2", 2500))


@pytest.mark.parametrize("kind", [EndKind.CLEAN, EndKind.KICKED, EndKind.REVOKED])
async def test_a_meant_end_closes_at_once(kind: EndKind) -> None:
    harness = Harness()
    proto = source("c1")
    harness.hub.started(proto, 7, "studio")
    await harness.settle()
    harness.hub.ended(proto, 7, kind, grace=30)
    await harness.hub.close()
    assert harness.made[0].calls[-1] == ("close", None)
    assert harness.hub.sinks(7) == []


async def test_grace_running_out_or_a_publish_elsewhere_closes_parked_outputs() -> None:
    harness = Harness()
    proto = source("c1")
    harness.hub.started(proto, 7, "studio")
    await harness.settle()
    harness.hub.ended(proto, 7, EndKind.ABRUPT, grace=0.01)
    await asyncio.sleep(0.05)  # the grace timer is the thing under test
    await harness.hub.close()
    assert harness.made[0].calls[-1] == ("close", None)

    harness.hub.started(proto, 8, "other")
    await harness.settle()
    harness.hub.ended(proto, 8, EndKind.ABRUPT, grace=30)
    harness.hub.elsewhere(8)
    await harness.hub.close()
    assert harness.made[-1].calls[-1] == ("close", None)


async def test_a_change_starts_new_outputs_and_closes_removed_ones() -> None:
    harness = Harness(ChannelOutputs(targets=(YOUTUBE,)))
    proto = source("c1")
    harness.hub.started(proto, 7, "studio")
    await harness.settle()
    changed_key = PushTarget("a.rtmp.youtube.com", 1935, "live2", "k2", target_id=1, name="YouTube")
    harness.outputs = ChannelOutputs(record=True, targets=(changed_key,))
    harness.hub.changed(7)
    await harness.settle()
    await harness.hub.close()
    keys = [sink.key for sink in harness.made]
    assert keys == [GLOBAL, YOUTUBE, changed_key, RECORD]
    assert harness.made[1].calls[-1] == ("close", None)  # the old key's connection ends


def test_timeline_goes_on_across_a_reconnect() -> None:
    timeline = Timeline()
    assert [timeline.map(ts) for ts in (5000, 5040, 7000)] == [0, 40, 2000]
    timeline.resume(1500)  # the encoder came back 1.5 s later, its clock from 0
    assert [timeline.map(ts) for ts in (120, 100, 160)] == [3500, 3500, 3540]
    timeline.restart()  # a new connection to the target
    assert timeline.map(9000) == 0


async def test_outgoing_bytes_count_closed_outputs_too() -> None:
    harness = Harness(ChannelOutputs(targets=(YOUTUBE,)))
    proto = source("c1")
    harness.hub.started(proto, 7, "studio")
    await harness.settle()
    operator, youtube = harness.made
    operator.sent_bytes, youtube.sent_bytes = 1000, 700
    assert harness.hub.sent_bytes() == 1700
    harness.outputs = ChannelOutputs()  # YouTube removed: what it sent stays counted
    harness.hub.changed(7)
    await harness.settle()
    operator.sent_bytes += 300
    assert harness.hub.sent_bytes() == 2000


async def test_a_recording_made_by_the_first_load_starts_at_the_first_keyframe() -> None:
    """The encoder's first keyframe comes before the database answers: kept, replayed."""
    harness = Harness(ChannelOutputs(record=True))
    proto = source("c1")
    harness.hub.started(proto, 7, "studio")
    [early] = proto.sinks  # the operator's push attaches itself in real sinks; not here
    early.media(8, 0, b"\xaf\x01", False)  # audio before any picture: not kept
    early.media(9, 0, b"\x17\x01", True)
    early.media(8, 20, b"\xaf\x01", False)
    await harness.settle()
    _, record = harness.made
    assert record.calls == [("attach", ("c1", None)), ("media", 0), ("media", 20)]
    assert proto.sinks == []  # the buffer is gone once the outputs are known


async def test_a_database_away_at_the_start_is_asked_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("stream_sync.ingest.outputs.RETRY_FIRST", 0.001)
    harness = Harness(ChannelOutputs(targets=(YOUTUBE,)))
    answers: list[BaseException | None] = [ConnectionRefusedError(), None]
    real_load = harness.load

    async def flaky(channel_id: int) -> ChannelOutputs:
        failure = answers.pop(0)
        if failure is not None:
            raise failure
        return await real_load(channel_id)

    harness.hub._load = flaky
    harness.hub.started(source("c1"), 7, "studio")
    await harness.settle()
    assert [sink.key for sink in harness.made] == [GLOBAL, YOUTUBE]
    assert "channel=studio outputs wait for the database (ConnectionRefusedError)" in caplog.text
    assert all(record.levelname == "WARNING" for record in caplog.records)
