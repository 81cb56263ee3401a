"""Thumbnails from real FFmpeg-made keyframes, and clear errors for what cannot decode."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import av
import pytest

from stream_sync.monitor.thumbnail import ThumbnailError, render, warm_up
from stream_sync.rtmp import flv
from stream_sync.rtmp.flv import PacketKind
from stream_sync.rtmp.flvfile import read_tags
from tests.support import debian_ffmpeg, static_ffmpeg


def keyframes(
    tmp_path: Path, encoder: str, size: str = "1280x720", ffmpeg: str | None = None
) -> tuple[bytes, list[bytes]]:
    """(configuration record, keyframes) of 2 s of a moving test pattern, one keyframe a second."""
    out = tmp_path / f"{encoder}.flv"
    source = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30", "-t", "2"]
    video = ["-c:v", encoder, "-g", "30", "-pix_fmt", "yuv420p"]
    command = [ffmpeg or debian_ffmpeg(), "-v", "error", *source, *video, "-f", "flv", str(out)]
    subprocess.run(command, check=True)
    config, found = b"", []
    for type_id, _, payload in read_tags(out.read_bytes()):
        if type_id == 9:
            for packet in flv.parse_video(payload):
                if packet.kind is PacketKind.SEQUENCE_START:
                    config = packet.body
                elif packet.keyframe:
                    found.append(packet.body)
    return config, found


def picture(jpeg: bytes) -> av.VideoFrame:
    with av.open(io.BytesIO(jpeg), format="mjpeg") as container:
        return next(container.decode(video=0))


def test_a_720p_keyframe_becomes_a_small_jpeg(tmp_path: Path) -> None:
    config, (first, second) = keyframes(tmp_path, "libx264")
    jpeg = render("avc1", config, first)
    assert jpeg[:2] == b"\xff\xd8"
    assert len(jpeg) < 40_000
    frame = picture(jpeg)
    assert (frame.width, frame.height) == (320, 180)
    assert render("avc1", config, second) != jpeg  # the pattern moved: a new picture


def test_a_small_picture_is_not_enlarged(tmp_path: Path) -> None:
    config, (first, _) = keyframes(tmp_path, "libx264", size="160x90")
    frame = picture(render("avc1", config, first))
    assert (frame.width, frame.height) == (160, 90)


def test_hevc_keyframes_work_too(tmp_path: Path) -> None:
    # Debian's FFmpeg 5.1 cannot put HEVC in FLV; 7+ writes Enhanced RTMP's hvc1.
    config, (first, _) = keyframes(tmp_path, "libx265", ffmpeg=static_ffmpeg())
    assert picture(render("hvc1", config, first)).width == 320


def test_what_cannot_become_a_picture_says_why(tmp_path: Path) -> None:
    config, (first, _) = keyframes(tmp_path, "libx264", size="160x90")
    with pytest.raises(ThumbnailError, match="no thumbnail for codec 'mp4a'"):
        render("mp4a", b"", first)
    with pytest.raises(ThumbnailError, match="avc1 keyframe"):
        render("avc1", config, bytes(len(first)))  # zeros: no picture in there


def test_the_built_in_warm_up_stream_becomes_a_picture() -> None:
    frame = picture(warm_up())  # the packaged FLV, as installed
    assert (frame.width, frame.height) == (160, 90)
