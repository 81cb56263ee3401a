"""Real FFmpeg publishing to a real node: acceptance, refusal, single publisher, key reset."""

from __future__ import annotations

import asyncio
import time

import pytest

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.node import Node
from stream_sync.state.interfaces import PublishEnded, PublishStarted
from tests.support import BusRecorder, debian_ffmpeg, ffmpeg_command, run_process

pytestmark = pytest.mark.ffmpeg

FPS = 15
AUDIO_FRAMES_PER_SECOND = 48000 / 1024


def unknown_key() -> str:
    return "ssk_AAAAAAAAAAAA_" + "B" * 43


async def test_valid_key_publishes_h264_aac_and_is_counted(
    node: Node, channel: service.CreatedChannel, bus: BusRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    seconds = 3
    url = f"{node.rtmp_url}/{channel.key}"
    proc = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=seconds))
    started = await bus.wait_for(PublishStarted)
    ended = await bus.wait_for(PublishEnded)
    _, stderr = await proc.communicate()

    assert proc.returncode == 0, stderr.decode()
    assert started.channel_id == channel.channel_id
    assert started.key_id == channel.key_id
    assert ended.reason == "client stopped (FCUnpublish)"
    assert abs(ended.video_frames - seconds * FPS) <= 1
    assert abs(ended.audio_frames - seconds * AUDIO_FRAMES_PER_SECOND) <= 2
    assert ended.media_bytes > 30_000  # ~300 kbit/s of video for 3 s, plus audio
    assert ended.video_codec == "avc1"
    assert ended.audio_codec == "mp4a"
    assert channel.key not in caplog.text
    assert f"publish accepted channel=demo key_id={channel.key_id}" in caplog.text


@pytest.mark.parametrize(
    "key", [unknown_key(), "not-a-key", ""], ids=["unknown", "malformed", "empty"]
)
async def test_wrong_key_is_refused_within_a_second(
    node: Node,
    channel: service.CreatedChannel,
    bus: BusRecorder,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    began = time.monotonic()
    proc = await run_process(ffmpeg_command(debian_ffmpeg(), f"{node.rtmp_url}/{key}", seconds=5))
    _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    elapsed = time.monotonic() - began

    assert proc.returncode != 0
    assert "Invalid stream key" in stderr.decode()
    assert elapsed < 2.0  # FFmpeg's own start-up included; a 5 s stream it never got to send
    assert not bus.of(PublishStarted)
    assert "publish refused reason=" in caplog.text


async def test_second_publisher_on_a_live_channel_is_refused_and_the_first_keeps_going(
    node: Node, channel: service.CreatedChannel, bus: BusRecorder
) -> None:
    url = f"{node.rtmp_url}/{channel.key}"
    first = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=5))
    await bus.wait_for(PublishStarted)

    second = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=5))
    _, second_err = await asyncio.wait_for(second.communicate(), 10)
    assert second.returncode != 0
    assert "already live" in second_err.decode()
    assert first.returncode is None  # still streaming

    ended = await bus.wait_for(PublishEnded)
    _, first_err = await first.communicate()
    assert first.returncode == 0, first_err.decode()
    assert abs(ended.video_frames - 5 * FPS) <= 1  # every frame of the first stream arrived
    assert len(bus.of(PublishStarted)) == 1


async def test_key_reset_while_live_cuts_the_publisher_and_refuses_the_old_key(
    node: Node, channel: service.CreatedChannel, bus: BusRecorder
) -> None:
    url = f"{node.rtmp_url}/{channel.key}"
    proc = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=30))
    await bus.wait_for(PublishStarted)

    reset = await node.control.reset_key(channel_id=channel.channel_id, actor=Actor.cli())
    reset_at = time.monotonic()
    ended = await bus.wait_for(PublishEnded, timeout=5)
    assert time.monotonic() - reset_at < 1.0
    assert ended.reason == "key revoked"
    await asyncio.wait_for(proc.wait(), 5)
    assert proc.returncode != 0

    again = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=2))
    _, stderr = await asyncio.wait_for(again.communicate(), 10)
    assert again.returncode != 0
    assert "Invalid stream key" in stderr.decode()

    fresh = await run_process(
        ffmpeg_command(debian_ffmpeg(), f"{node.rtmp_url}/{reset.key}", seconds=1)
    )
    _, stderr = await asyncio.wait_for(fresh.communicate(), 10)
    assert fresh.returncode == 0, stderr.decode()
    assert len(bus.of(PublishStarted)) == 2
