"""Recording (issue 12) with real FFmpeg publishing to a real node: the file plays, has
the duration that was sent, survives an encoder killed and back within grace in one
file, and starts at once when the record switch is turned on during a live stream.

Stopping the node is the moment every recording is finished (its outputs close
before it returns), so the tests look at files and rows after it, without polling.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.monitor.settings import set_monitor_settings
from stream_sync.node import Node, open_store
from stream_sync.recordings import rows
from stream_sync.rtmp.flvfile import read_tags
from stream_sync.settings import Settings
from stream_sync.state.interfaces import PublishEnded, PublishStarted, StatusChanged, StreamStats
from tests.integration.conftest import node_settings, publish_test_pattern, running_node
from tests.support import (
    BusRecorder,
    debian_ffmpeg,
    decode_errors,
    ffmpeg_command,
    probe_file,
    run_process,
)

pytestmark = pytest.mark.ffmpeg


async def recorded_channel(node: Node, *, grace: int | None = None) -> service.CreatedChannel:
    async with node.sessions() as session:
        channel = await service.create_channel(
            session, secrets=node.store.secrets, name="studio", actor=Actor.cli()
        )
    async with node.sessions() as session:
        await set_monitor_settings(
            session, channel_id=channel.channel_id, actor=Actor.cli(), record=True,
            grace_seconds=grace,
        )  # fmt: skip
    return channel


def recording_state(event: StreamStats) -> dict[str, Any]:
    return next((o for o in event.outputs if o.get("kind") == "record"), {})


async def finished(settings: Settings, channel_id: int) -> list[rows.RecordingInfo]:
    """The channel's recordings as the stopped node left them, oldest first."""
    async with open_store(settings) as store, store.sessions() as session:
        found = await rows.list_recordings(session, channel_id=channel_id)
    return found[::-1]


async def test_a_recorded_publish_plays_and_has_the_duration_that_was_sent(
    tmp_path: Path,
) -> None:
    seconds = 6
    settings = node_settings(tmp_path / "data")
    async with running_node(settings) as node:
        channel = await recorded_channel(node)
        bus = BusRecorder(node.bus)
        await publish_test_pattern(node, channel.key, seconds)
        started = await bus.wait_for(PublishStarted)
        await bus.wait_for(PublishEnded)
        await bus.close()

    [row] = await finished(settings, channel.channel_id)
    path = settings.recordings_path() / row.path
    assert path.parent == settings.data_dir / "recordings" / str(channel.channel_id)
    assert (row.status, row.end_reason) == ("complete", "stream ended")
    assert row.session_id == started.session_id
    assert row.bytes == path.stat().st_size
    codecs, duration = probe_file(path)
    assert codecs == ["aac", "h264"]
    # What was sent, from the first keyframe the recording saw (one a second).
    assert seconds - 1.5 <= duration <= seconds + 0.1
    assert abs(duration - row.duration_ms / 1000) < 0.1
    assert decode_errors(path) == ""


async def test_an_encoder_killed_and_back_within_grace_goes_on_in_the_same_file(
    tmp_path: Path,
) -> None:
    after = 4
    settings = node_settings(tmp_path / "data")
    async with running_node(settings) as node:
        channel = await recorded_channel(node, grace=15)
        bus = BusRecorder(node.bus)
        url = f"{node.rtmp_url}/{channel.key}"
        first = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=60))
        live = await bus.wait_for(
            StreamStats, lambda e: recording_state(e).get("seconds", 0) >= 3, timeout=20
        )
        before = recording_state(live)["seconds"]
        killed_at = time.monotonic()
        os.kill(first.pid, signal.SIGKILL)
        await first.wait()
        await bus.wait_for(StatusChanged, lambda e: e.status == "reconnecting")
        second = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=after))
        [gone] = bus.of(PublishStarted)
        back = await bus.wait_for(PublishStarted, lambda e: e.connection_id != gone.connection_id)
        back_at = time.monotonic()
        _, stderr = await second.communicate()
        assert second.returncode == 0, stderr.decode()
        await bus.wait_for(PublishEnded, lambda e: e.connection_id == back.connection_id)
        await bus.close()

    [row] = await finished(settings, channel.channel_id)  # one file for the session
    assert row.session_id == back.session_id
    path = settings.recordings_path() / row.path
    tags = read_tags(path.read_bytes())
    stamps = [stamp for _, stamp, _ in tags]
    assert stamps == sorted(stamps)  # time goes on across the gap, never back
    _, duration = probe_file(path)
    gap = back_at - killed_at
    assert before + after - 1.5 <= duration <= before + 1.5 + gap + after + 0.1
    assert abs(duration - row.duration_ms / 1000) < 0.1
    assert decode_errors(path) == ""


async def test_turning_recording_on_during_a_live_stream_starts_it_at_once(
    tmp_path: Path,
) -> None:
    seconds = 8
    settings = node_settings(tmp_path / "data")
    async with running_node(settings) as node:
        async with node.sessions() as session:
            channel = await service.create_channel(
                session, secrets=node.store.secrets, name="studio", actor=Actor.cli()
            )
        bus = BusRecorder(node.bus)
        url = f"{node.rtmp_url}/{channel.key}"
        encoder = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=seconds))
        await bus.wait_for(StatusChanged, lambda e: e.status == "live")
        assert not any(recording_state(e) for e in bus.of(StreamStats))
        async with node.sessions() as session:  # what PATCH /api/channels/{id} does
            await set_monitor_settings(
                session, channel_id=channel.channel_id, actor=Actor.cli(), record=True
            )
        switched_at = time.monotonic()
        await node.control.outputs_changed(channel.channel_id)
        await bus.wait_for(StreamStats, lambda e: recording_state(e).get("state") == "recording")
        _, stderr = await encoder.communicate()
        ended_at = time.monotonic()
        assert encoder.returncode == 0, stderr.decode()
        await bus.wait_for(PublishEnded)
        await bus.close()

    [row] = await finished(settings, channel.channel_id)
    path = settings.recordings_path() / row.path
    codecs, duration = probe_file(path)
    assert codecs == ["aac", "h264"]
    assert ended_at - switched_at - 1.5 <= duration <= ended_at - switched_at + 0.5
    assert decode_errors(path) == ""
