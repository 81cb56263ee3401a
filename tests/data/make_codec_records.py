"""Regenerate codec_records.json: configuration records from real encoders, with FFmpeg's word.

Each case encodes a short synthetic clip into FLV, takes the first non-empty sequence
start out of the file with the project's own FLV tag parser, then remuxes the bitstream
into Matroska (no re-encoding) and asks ffprobe what it is. ffprobe is the
independent oracle: tests compare `describe_video`/`describe_audio` against its raw
report, never against values computed here.

H.264 and AAC go through Debian's FFmpeg 5.1 and its legacy FLV muxer (what most
encoders still send); HEVC, AV1, VP9, Opus and FLAC need Enhanced RTMP, so they use the
static FFmpeg 9 from imageio-ffmpeg, whose FLV muxer writes E-RTMP FourCC tags. The
Debian ffprobe reads the Matroska remux of both (it cannot read enhanced FLV).

    .venv/bin/python tests/data/make_codec_records.py   # rewrites codec_records.json

Not run by the tests: they only read the JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio_ffmpeg

from stream_sync.rtmp import amf0, flv

OUT = Path(__file__).with_name("codec_records.json")
DEBIAN_FFMPEG = "/usr/bin/ffmpeg"
FFPROBE = "/usr/bin/ffprobe"
STATIC_FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
DURATION = "0.3"
PROBE_FIELDS = (
    "codec_name,profile,level,width,height,coded_width,coded_height,pix_fmt,"
    "bits_per_raw_sample,sample_rate,channels,channel_layout"
)


@dataclass(frozen=True)
class Case:
    name: str
    ffmpeg: str  # "debian" or "static"
    args: tuple[str, ...]  # input and encoder options
    source: dict[str, Any]  # what the encoder was fed


def video(name: str, ffmpeg: str, size: str, rate: str, *args: str) -> Case:
    source = ("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", "-an")
    return Case(name, ffmpeg, (*source, *args), {"size": size, "rate": rate})


def audio(name: str, ffmpeg: str, rate: int, layout: str, *args: str) -> Case:
    source = ("-f", "lavfi", "-i", f"sine=f=440:sample_rate={rate}", "-vn")
    layout_filter = ("-af", f"aformat=channel_layouts={layout}")
    return Case(
        name, ffmpeg, (*source, *layout_filter, *args), {"sample_rate": rate, "layout": layout}
    )


# Not ultrafast: it turns off CABAC and B-frames, and x264 then signals Baseline.
X264 = ("-c:v", "libx264", "-preset", "veryfast")
X265 = ("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error")
SVTAV1 = ("-c:v", "libsvtav1", "-preset", "12")
AOM = ("-c:v", "libaom-av1", "-cpu-used", "8")  # SVT-AV1 has no 4:4:4 (AV1 High)
VP9 = ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8")

CASES = (
    # H.264, legacy FLV (Debian FFmpeg 5.1, libx264).
    video("h264-baseline-320x240", "debian", "320x240", "30", *X264, "-profile:v", "baseline"),
    video("h264-main-640x360", "debian", "640x360", "30", *X264, "-profile:v", "main"),
    video("h264-high-854x480", "debian", "854x480", "30", *X264, "-profile:v", "high"),
    video("h264-high-1280x720p60", "debian", "1280x720", "60", *X264, "-profile:v", "high"),
    video("h264-high-1366x768", "debian", "1366x768", "30", *X264, "-profile:v", "high"),
    video("h264-high-1920x1080", "debian", "1920x1080", "30", *X264, "-profile:v", "high"),
    video(
        "h264-high-1920x1080p60-level42",
        "debian",
        "1920x1080",
        "60",
        *X264,
        "-profile:v",
        "high",
        "-level",
        "4.2",
    ),
    video("h264-high-2560x1440", "debian", "2560x1440", "30", *X264, "-profile:v", "high"),
    video("h264-high-3840x2160", "debian", "3840x2160", "30", *X264, "-profile:v", "high"),
    video(
        "h264-high-1920x1080i",  # interlaced: frame_mbs_only 0, cropping in field pairs
        "debian",
        "1920x1080",
        "30",
        *X264,
        "-profile:v",
        "high",
        "-flags",
        "+ildct+ilme",
        "-x264-params",
        "interlaced=1",
    ),
    video(
        "h264-high10-1920x1080",
        "debian",
        "1920x1080",
        "30",
        *X264,
        "-pix_fmt",
        "yuv420p10le",
        "-profile:v",
        "high10",
    ),
    video(
        "h264-high422-1920x1080",  # 4:2:2 crops vertically in single lines
        "debian",
        "1920x1080",
        "30",
        *X264,
        "-pix_fmt",
        "yuv422p",
        "-profile:v",
        "high422",
    ),
    video(
        "h264-high444-853x479",  # odd sizes are only possible without chroma subsampling
        "debian",
        "854x480",
        "30",
        "-vf",
        "scale=853:479",  # testsrc2 rounds its own size down to even
        *X264,
        "-pix_fmt",
        "yuv444p",
        "-profile:v",
        "high444",
    ),
    # HEVC, AV1, VP9: Enhanced RTMP FLV (static FFmpeg 9).
    video("hevc-main-1280x720", "static", "1280x720", "30", *X265, "-profile:v", "main"),
    video("hevc-main-1920x1080", "static", "1920x1080", "30", *X265, "-profile:v", "main"),
    video("hevc-main-854x480", "static", "854x480", "30", *X265, "-profile:v", "main"),
    video(
        "hevc-main10-1920x1080p60",
        "static",
        "1920x1080",
        "60",
        *X265,
        "-pix_fmt",
        "yuv420p10le",
        "-profile:v",
        "main10",
    ),
    video(
        "hevc-rext444-853x479",
        "static",
        "854x480",
        "30",
        "-vf",
        "scale=853:479",
        *X265,
        "-pix_fmt",
        "yuv444p",
    ),
    video("hevc-rext-gray-854x480", "static", "854x480", "30", *X265, "-pix_fmt", "gray"),
    video(
        "hevc-main-temporal-layers-854x480",  # sps_max_sub_layers > 1: sub-layer PTL fields
        "static",
        "854x480",
        "30",
        *X265[:-1],
        "log-level=error:temporal-layers=3",
    ),
    video("av1-main-1280x720", "static", "1280x720", "30", *SVTAV1),
    video("av1-main-854x480", "static", "854x480", "30", *SVTAV1),
    video("av1-main10-1920x1080", "static", "1920x1080", "30", *SVTAV1, "-pix_fmt", "yuv420p10le"),
    video("av1-high444-854x480", "static", "854x480", "30", *AOM, "-pix_fmt", "yuv444p"),
    video(
        "av1-main-timing-info-640x360",  # timing_info_present_flag and equal_picture_interval
        "static",
        "640x360",
        "30",
        *AOM,
        "-aom-params",
        "timing-info=constant",
    ),
    video("vp9-profile0-1280x720", "static", "1280x720", "30", *VP9),
    video("vp9-profile1-444-854x480", "static", "854x480", "30", *VP9, "-pix_fmt", "yuv444p"),
    video("vp9-profile2-854x480", "static", "854x480", "30", *VP9, "-pix_fmt", "yuv420p10le"),
    # Audio: AAC in legacy FLV (FFmpeg's native encoder; it has no HE-AAC), Opus and FLAC
    # in Enhanced RTMP.
    audio("aac-lc-44100-mono", "debian", 44100, "mono", "-c:a", "aac", "-b:a", "64k"),
    audio("aac-lc-44100-stereo", "debian", 44100, "stereo", "-c:a", "aac", "-b:a", "128k"),
    audio("aac-lc-48000-mono", "debian", 48000, "mono", "-c:a", "aac", "-b:a", "64k"),
    audio("aac-lc-48000-stereo", "debian", 48000, "stereo", "-c:a", "aac", "-b:a", "160k"),
    audio("aac-lc-22050-stereo", "debian", 22050, "stereo", "-c:a", "aac", "-b:a", "64k"),
    audio("aac-lc-48000-5.1", "debian", 48000, "5.1", "-c:a", "aac", "-b:a", "256k"),
    audio("opus-48000-stereo", "static", 48000, "stereo", "-c:a", "libopus", "-b:a", "96k"),
    audio("opus-16000-mono", "static", 16000, "mono", "-c:a", "libopus", "-b:a", "32k"),
    audio("opus-48000-5.1", "static", 48000, "5.1", "-c:a", "libopus", "-b:a", "256k"),
    audio("flac-44100-stereo", "static", 44100, "stereo", "-c:a", "flac"),
)


def version(executable: str) -> str:
    first = subprocess.run(
        [executable, "-version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    return " ".join(first.split()[:3])


def flv_tags(data: bytes) -> list[tuple[int, bytes]]:
    """(tag type, body) for every tag of an FLV file."""
    if data[:3] != b"FLV":
        raise ValueError("not an FLV file")
    pos = int.from_bytes(data[5:9], "big") + 4  # header, then PreviousTagSize0
    tags = []
    while pos + 11 <= len(data):
        tag_type, size = data[pos] & 0x1F, int.from_bytes(data[pos + 1 : pos + 4], "big")
        tags.append((tag_type, data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return tags


def sequence_starts(tags: list[tuple[int, bytes]]) -> list[tuple[str, str, bytes]]:
    """(media, FourCC, record) of every sequence start in the file, in order."""
    found = []
    for tag_type, body in tags:
        if tag_type not in (8, 9):
            continue
        packets = flv.parse_video(body) if tag_type == 9 else flv.parse_audio(body)
        for packet in packets:
            if packet.kind is flv.PacketKind.SEQUENCE_START:
                found.append((("video" if tag_type == 9 else "audio"), packet.codec, packet.body))
    return found


def on_metadata(tags: list[tuple[int, bytes]]) -> dict[str, Any]:
    for tag_type, body in tags:
        if tag_type == 18:
            values = amf0.decode_all(body)
            if values and values[0] == "onMetaData":
                return {
                    k: v for k, v in dict(values[1]).items() if isinstance(v, int | float | str)
                }
    return {}


def probe(path: Path) -> dict[str, Any]:
    report = subprocess.run(
        [FFPROBE, "-v", "error", "-show_entries", f"stream={PROBE_FIELDS}", "-of", "json", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (stream,) = json.loads(report)["streams"]
    return dict(stream)


def run(case: Case, folder: Path) -> dict[str, Any]:
    executable = DEBIAN_FFMPEG if case.ffmpeg == "debian" else STATIC_FFMPEG
    clip, remux = folder / f"{case.name}.flv", folder / f"{case.name}.mkv"
    command = ["-hide_banner", "-loglevel", "error", *case.args, "-t", DURATION, "-f", "flv"]
    # SVT-AV1 prints its whole configuration unless told otherwise.
    environment = {**os.environ, "SVT_LOG": "1"}
    subprocess.run([executable, "-y", *command, clip], check=True, env=environment)
    subprocess.run(
        [STATIC_FFMPEG, "-y", "-loglevel", "error", "-i", clip, "-c", "copy", remux], check=True
    )
    tags = flv_tags(clip.read_bytes())
    starts = sequence_starts(tags)
    # FFmpeg with libaom sends an empty sequence start before the encoder's extradata
    # exists, then the real one: keep the first with a record, and say how many came
    # before it.
    empty = 0
    while not starts[empty][2]:
        empty += 1
    media, fourcc, record = starts[empty]
    return {
        "name": case.name,
        "source": case.source,
        "media": media,
        "fourcc": fourcc,
        "record": record.hex(),
        "empty_sequence_starts_before": empty,
        "ffprobe": probe(remux),
        "onMetaData": on_metadata(tags),
        "command": f"{case.ffmpeg} ffmpeg {' '.join(command)} clip.flv",
    }


def main() -> int:
    for tool in (DEBIAN_FFMPEG, FFPROBE, STATIC_FFMPEG):
        if not shutil.which(tool):
            print(f"missing {tool}", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory() as tmp:
        records = [run(case, Path(tmp)) for case in CASES]
    document = {
        "_source": {
            "generator": "tests/data/make_codec_records.py",
            "debian": version(DEBIAN_FFMPEG) + " (legacy FLV: H.264, AAC)",
            "static": version(STATIC_FFMPEG)
            + f" from imageio-ffmpeg {imageio_ffmpeg.__version__} (Enhanced RTMP FLV)",
            "oracle": version(FFPROBE)
            + " -show_entries stream=... on a `-c copy` Matroska remux of each clip",
            "media": f"lavfi testsrc2 / 440 Hz sine, {DURATION} s",
        },
        "records": records,
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {len(records)} records to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
