"""GStreamer's two RTMP sinks: librtmp (rtmpsink) and GStreamer's own (rtmp2sink)."""

from __future__ import annotations

import asyncio

import pytest

from stream_sync.credentials import service
from stream_sync.node import Node
from stream_sync.state.interfaces import PublishEnded, PublishStarted
from tests.support import BusRecorder, gst_command, gstreamer, run_process

pytestmark = pytest.mark.gstreamer
FRAMES = 45


@pytest.mark.parametrize("element", ["rtmp2sink", "rtmpsink"])
async def test_gstreamer_publishes(
    node: Node, channel: service.CreatedChannel, bus: BusRecorder, element: str
) -> None:
    url = f"{node.rtmp_url}/{channel.key}"
    # librtmp takes its options inside the location, after a space.
    location = f"location={url}" if element == "rtmp2sink" else f"location={url} live=1"
    proc = await run_process(gst_command(gstreamer(element), [element, location], frames=FRAMES))
    await bus.wait_for(PublishStarted)
    ended = await bus.wait_for(PublishEnded, timeout=20)
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)

    assert proc.returncode == 0, stderr.decode()
    assert ended.video_frames == FRAMES
    assert ended.video_codec == "avc1"
    assert ended.audio_codec == "mp4a"
    assert ended.audio_frames > 100


async def test_rtmp2sink_wrong_key_fails_fast(node: Node, bus: BusRecorder) -> None:
    url = f"{node.rtmp_url}/ssk_AAAAAAAAAAAA_{'C' * 43}"
    sink = ["rtmp2sink", f"location={url}"]
    proc = await run_process(gst_command(gstreamer("rtmp2sink"), sink, frames=300))
    await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode != 0
    assert not bus.of(PublishStarted)
