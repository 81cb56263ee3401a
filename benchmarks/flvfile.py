"""The sample stream the load generator replays, and a reader for its FLV tags.

The file is encoded once by FFmpeg and cached under benchmarks/.cache/ (git-ignored):
encoding 720p H.264 costs far more CPU than the servers under test, so it must never
happen while something is measured. Its profile is what the issue asks for: 1280x720,
30 fps, a keyframe every 2 s, 4.5 Mbit/s video (CBR-ish: maxrate = bitrate), 160 kbit/s
AAC, 20 s. Reading the tags is plain offset arithmetic, done once per process.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
SAMPLE_SECONDS = 20
SAMPLE = CACHE_DIR / f"sample-720p30-4500k-aac160k-{SAMPLE_SECONDS}s.flv"

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18
_FLV_HEADER = 9
_TAG_HEADER = 11


def ffmpeg_command(out: Path, seconds: int = SAMPLE_SECONDS) -> list[str]:
    """The encode, spelled out so the report can quote it."""
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-b:v",
        "4500k",
        "-maxrate",
        "4500k",
        "-bufsize",
        "4500k",
        "-g",
        "60",
        "-keyint_min",
        "60",
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
        "-b:a",
        "160k",
        "-ac",
        "2",
        "-t",
        str(seconds),
        "-f",
        "flv",
        str(out),
    ]


def ensure_sample(
    path: Path = SAMPLE, encode: Callable[[Path], list[str]] = ffmpeg_command
) -> Path:
    """The cached sample, encoding it first if it is missing (720p: a minute of CPU)."""
    if path.exists() and path.stat().st_size > 0:
        return path
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is needed once, to encode the sample stream")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.flv")
    subprocess.run(encode(partial), check=True)
    partial.replace(path)
    return path


@dataclass(frozen=True, slots=True)
class Tag:
    type_id: int  # 8 audio, 9 video, 18 script data
    timestamp: int  # milliseconds (FLV's 24 bits plus the extension byte)
    payload: bytes


@dataclass(frozen=True, slots=True)
class FlvStream:
    """The tags of one FLV file, split the way an encoder sends them."""

    metadata: bytes  # the onMetaData script tag's payload ("onMetaData", ECMA array)
    headers: list[Tag]  # codec configuration (AVC and AAC sequence headers), sent once
    frames: list[Tag]  # coded audio and video frames, in file (decode) order
    trailer: list[Tag]  # end of sequence: only after the last pass through the file
    duration_ms: int  # how long the frames last: where a looped replay starts again

    @property
    def media_bytes(self) -> int:
        return sum(len(tag.payload) for tag in self.headers + self.frames + self.trailer)


def read_tags(data: bytes) -> list[Tag]:
    if data[:3] != b"FLV":
        raise ValueError("not an FLV file")
    pos = int.from_bytes(data[5:9], "big") + 4  # header, then PreviousTagSize0
    tags: list[Tag] = []
    while pos + _TAG_HEADER <= len(data):
        type_id = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        stamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        body = pos + _TAG_HEADER
        if body + size > len(data):
            break  # a truncated last tag
        tags.append(Tag(type_id, stamp, data[body : body + size]))
        pos = body + size + 4  # the payload, then PreviousTagSize
    return tags


def packet_type(tag: Tag) -> int:
    """AVC (07) or AAC (0xA) packet type: 0 configuration, 1 frame, 2 end of sequence."""
    payload = tag.payload
    if len(payload) < 2:
        return 1
    if tag.type_id == TAG_VIDEO and payload[0] & 0x0F == 7:
        return payload[1]
    if tag.type_id != TAG_VIDEO and payload[0] >> 4 == 10:
        return payload[1]
    return 1


def load(path: Path) -> FlvStream:
    tags = read_tags(path.read_bytes())
    metadata = b""
    headers: list[Tag] = []
    frames: list[Tag] = []
    trailer: list[Tag] = []
    for tag in tags:
        if tag.type_id == TAG_SCRIPT:
            if not metadata:
                metadata = tag.payload
        elif tag.type_id in (TAG_AUDIO, TAG_VIDEO):
            kind = packet_type(tag)
            if kind == 0:
                headers.append(tag)
            elif kind == 2:
                trailer.append(tag)
            else:
                frames.append(tag)
    if not frames:
        raise ValueError(f"{path} holds no audio or video frames")
    video = [tag.timestamp for tag in frames if tag.type_id == TAG_VIDEO]
    steps = sorted(b - a for a, b in itertools.pairwise(video) if b > a)
    step = steps[len(steps) // 2] if steps else 33
    last = max(tag.timestamp for tag in frames)
    return FlvStream(metadata, headers, frames, trailer, duration_ms=last + step)
