"""GStreamer: rtmpsink (librtmp) and rtmp2sink, RTMPS with the certificate verified."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stream_sync.credentials import service
from stream_sync.node import Node
from stream_sync.state.interfaces import PublishEnded, PublishStarted
from tests.compat.encoders import gst_version, trusting
from tests.compat.report import Row
from tests.support import BusRecorder, gst_command, gstreamer, run_process

pytestmark = pytest.mark.gstreamer

FRAMES = 45  # 3 s at 15 fps


@pytest.mark.parametrize(
    ("element", "transport"),
    [("rtmpsink", "rtmp"), ("rtmp2sink", "rtmp"), ("rtmp2sink", "rtmps")],
)
async def test_gstreamer(
    node: Node,
    channel: service.CreatedChannel,
    bus: BusRecorder,
    row: Row,
    certificate: Path,
    tmp_path: Path,
    element: str,
    transport: str,
) -> None:
    exe = gstreamer(element)
    row.describe(f"GStreamer {element}", gst_version(exe), transport.upper(), "H.264/AAC")
    prefix: list[str] = []
    if transport == "rtmps":  # verified against the test certificate, which names localhost
        url = f"rtmps://localhost:{node.rtmps_port}/live/{channel.key}"
        prefix = trusting(tmp_path / "certs", certificate)
    else:
        url = f"{node.rtmp_url}/{channel.key}"
    # librtmp takes its options inside the location, after a space.
    location = f"location={url} live=1" if element == "rtmpsink" else f"location={url}"
    proc = await run_process(prefix + gst_command(exe, [element, location], frames=FRAMES))
    started = await bus.wait_for(PublishStarted)
    ended = await bus.wait_for(PublishEnded, timeout=20)
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)

    assert proc.returncode == 0, stderr.decode()
    assert started.channel_id == channel.channel_id
    assert ended.video_frames == FRAMES
    assert (ended.video_codec, ended.audio_codec) == ("avc1", "mp4a")
    assert ended.audio_frames > 100
    row.result = f"works ({FRAMES} video frames, all counted)"
