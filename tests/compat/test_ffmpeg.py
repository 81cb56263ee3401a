"""FFmpeg old and new: H.264/AAC over RTMP and RTMPS, Enhanced RTMP codecs, multitrack."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stream_sync.credentials import service
from stream_sync.node import Node
from stream_sync.state.interfaces import PublishEnded, PublishStarted, StreamStats
from tests.compat.encoders import ffmpeg
from tests.compat.report import Row
from tests.support import BusRecorder, ffmpeg_command, publish_to_end, run_process

pytestmark = pytest.mark.ffmpeg

SECONDS = 3
X265 = ("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error")
AV1 = ("-c:v", "libaom-av1", "-cpu-used", "8", "-usage", "realtime")
VP9 = ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8")
AAC = ("-c:a", "aac", "-b:a", "64k", "-ac", "1")
OPUS = ("-c:a", "libopus", "-b:a", "64k", "-ac", "1")

# name in the table, video and audio options, what the monitor must report
ENHANCED = {
    "HEVC/AAC": (X265, AAC, "hvc1", "mp4a"),
    "AV1/AAC": (AV1, AAC, "av01", "mp4a"),
    "VP9/AAC": (VP9, AAC, "vp09", "mp4a"),
    "HEVC/Opus": (X265, OPUS, "hvc1", "Opus"),
}


def url(node: Node, transport: str, key: str) -> str:
    """An address, not a name: the static FFmpeg 7.0 segfaults resolving one (static glibc).

    The test certificate names 127.0.0.1 as well as localhost.
    """
    return f"{node.rtmps_url if transport == 'rtmps' else node.rtmp_url}/{key}"


def check_ended(ended: PublishEnded, video: str, audio: str) -> None:
    assert ended.reason == "client stopped (FCUnpublish)"
    assert (ended.video_codec, ended.audio_codec) == (video, audio)
    assert ended.video_frames >= SECONDS * 15 - 2  # 15 fps for SECONDS
    assert ended.audio_frames > 0


@pytest.mark.parametrize("transport", ["rtmp", "rtmps"])
@pytest.mark.parametrize("build", ["debian", "7.0", "9.0"])
async def test_h264_aac(
    node: Node,
    channel: service.CreatedChannel,
    row: Row,
    certificate: Path,
    build: str,
    transport: str,
) -> None:
    encoder = ffmpeg(build)
    row.describe(encoder.client, encoder.version, transport.upper(), "H.264/AAC")
    # FFmpeg 8+ verifies certificates by default, older ones when told to: all of them do here.
    verify = ("-tls_verify", "1", "-ca_file", str(certificate)) if transport == "rtmps" else ()
    target = url(node, transport, channel.key)
    command = ffmpeg_command(encoder.exe, target, seconds=SECONDS, output=verify)
    started, ended = await publish_to_end(node.bus, command)
    assert started.channel_id == channel.channel_id
    check_ended(ended, "avc1", "mp4a")
    row.result = f"works ({SECONDS} s, {ended.video_frames} video frames)"


@pytest.mark.parametrize("codec", list(ENHANCED))
@pytest.mark.parametrize("build", ["7.0", "9.0"])
async def test_enhanced_rtmp(
    node: Node,
    channel: service.CreatedChannel,
    bus: BusRecorder,
    row: Row,
    build: str,
    codec: str,
) -> None:
    encoder = ffmpeg(build)
    video, audio, video_fourcc, audio_fourcc = ENHANCED[codec]
    row.describe(encoder.client, encoder.version, "Enhanced RTMP", codec)
    announced = ",".join(c for c in (video_fourcc, audio_fourcc) if c != "mp4a")
    command = ffmpeg_command(
        encoder.exe,
        url(node, "rtmp", channel.key),
        seconds=SECONDS,
        video=video,
        audio=audio,
        output=("-rtmp_enhanced_codecs", announced),
    )
    if build == "7.0" and audio_fourcc == "Opus":
        # FFmpeg 7.0's RTMP client knows only video FourCCs: it stops before connecting.
        proc = await run_process(command)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
        said = "Unsupported codec fourcc, Opus"
        assert proc.returncode != 0
        assert said in stderr.decode()
        assert not bus.of(PublishStarted)
        row.result = f'not supported by the client ("{said}")'
        return
    _, ended = await publish_to_end(node.bus, command)
    check_ended(ended, video_fourcc, audio_fourcc)
    row.result = f"works ({SECONDS} s, {ended.video_frames} video frames)"


async def test_multitrack(
    node: Node, channel: service.CreatedChannel, bus: BusRecorder, row: Row
) -> None:
    """FFmpeg 8+ sends a second video and audio rendition as tracks of one stream."""
    encoder = ffmpeg("9.0")
    row.describe(
        encoder.client, encoder.version, "Enhanced RTMP", "multitrack: 2 H.264 + 2 AAC tracks"
    )
    renditions = ("-map", "0:v", "-map", "0:v", "-map", "1:a", "-map", "1:a", "-s:v:1", "160x120")
    command = ffmpeg_command(
        encoder.exe,
        url(node, "rtmp", channel.key),
        seconds=SECONDS,
        video=(*renditions, "-c:v", "libx264", "-preset", "ultrafast", "-g", "15"),
        output=("-rtmp_enhanced_codecs", "avc1,mp4a"),
    )
    proc = await run_process(command)
    stats = await bus.wait_for(
        StreamStats, lambda s: "video.1" in s.codecs and "audio.1" in s.codecs
    )
    ended = await bus.wait_for(PublishEnded, timeout=SECONDS + 15)
    _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, stderr.decode()
    assert stats.codecs == {"video": "avc1", "video.1": "avc1", "audio": "mp4a", "audio.1": "mp4a"}
    check_ended(ended, "avc1", "mp4a")  # frames count the default track
    row.result = f"works ({SECONDS} s, tracks {', '.join(sorted(stats.codecs))})"
