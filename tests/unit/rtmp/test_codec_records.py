"""describe_video/describe_audio against configuration records from real encoders.

tests/data/codec_records.json holds records that FFmpeg 5.1 (x264, AAC) and FFmpeg 9
(x265, SVT-AV1, libaom, libvpx, libopus, FLAC) wrote into FLV, next to what ffprobe
reported for the same bitstream (see the file's `_source`; regenerate it with
tests/data/make_codec_records.py). ffprobe is the oracle: these tests only translate
its vocabulary, never recompute its values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stream_sync.rtmp.codecs import CodecError, describe_audio, describe_video

FIXTURE = Path(__file__).parents[2] / "data" / "codec_records.json"
RECORDS: list[dict[str, Any]] = json.loads(FIXTURE.read_text())["records"]
VIDEO = [r for r in RECORDS if r["media"] == "video"]
AUDIO = [r for r in RECORDS if r["media"] == "audio"]

# ffprobe's names -> ours, where they differ.
CODEC_NAMES = {"h264": "H.264", "hevc": "HEVC", "av1": "AV1", "vp9": "VP9"}
PROFILE_NAMES = {"Rext": "Format Range Extensions"}
AUDIO_CODECS = {"aac": "AAC", "opus": "Opus", "flac": "FLAC"}
AUDIO_PROFILES = {"LC": "AAC-LC", "HE-AAC": "HE-AAC (SBR)", "HE-AACv2": "HE-AACv2 (PS)"}
# pix_fmt -> (luma bit depth, chroma format)
PIXEL_FORMATS = {
    "yuv420p": (8, "4:2:0"),
    "yuvj420p": (8, "4:2:0"),
    "yuv422p": (8, "4:2:2"),
    "yuv444p": (8, "4:4:4"),
    "gray": (8, "4:0:0"),
    "yuv420p10le": (10, "4:2:0"),
}


def expected_level(codec: str, level: int) -> float | None:
    """ffprobe's level field is each codec's raw level code."""
    if codec == "h264":
        return level / 10
    if codec == "hevc":
        return round(level / 30, 1)
    if codec == "av1":  # seq_level_idx: 2.0 is 0, minor levels in steps of one
        return 2 + (level >> 2) + (level & 3) / 10
    raise AssertionError(codec)


def test_the_fixture_covers_what_it_claims() -> None:
    """Guards against a regeneration that silently lost cases."""
    fourccs = {r["fourcc"] for r in RECORDS}
    assert fourccs == {"avc1", "hvc1", "av01", "vp09", "mp4a", "Opus", "fLaC"}
    assert len(VIDEO) >= 20
    assert len(AUDIO) >= 8
    assert all(r["record"] for r in RECORDS)


@pytest.mark.parametrize("record", VIDEO, ids=[r["name"] for r in VIDEO])
def test_video_record_matches_ffprobe(record: dict[str, Any]) -> None:
    probe = record["ffprobe"]
    config = describe_video(record["fourcc"], bytes.fromhex(record["record"]))
    assert config.codec == record["fourcc"]
    assert config.codec_name == CODEC_NAMES[probe["codec_name"]]
    assert config.profile_name == PROFILE_NAMES.get(probe["profile"], probe["profile"])
    assert (config.bit_depth, config.chroma_format) == PIXEL_FORMATS[probe["pix_fmt"]]
    if probe["codec_name"] == "vp9":
        # vpcC carries no picture size, and ffprobe does not know VP9 levels (-99).
        assert (config.width, config.height) == (None, None)
        assert probe["level"] == -99
        assert config.level is not None
    else:
        assert (config.width, config.height) == (probe["width"], probe["height"])
        assert config.level == pytest.approx(expected_level(probe["codec_name"], probe["level"]))


def test_cropped_sizes_are_the_displayed_ones() -> None:
    """The cases where the coded size differs: the record's cropping must be applied."""
    cropped = [
        r
        for r in VIDEO
        if (r["ffprobe"]["coded_width"], r["ffprobe"]["coded_height"])
        != (r["ffprobe"]["width"], r["ffprobe"]["height"])
    ]
    assert {r["fourcc"] for r in cropped} == {"hvc1"}  # x264's coded size is reported cropped
    for r in cropped + [r for r in VIDEO if r["name"] == "h264-high-1920x1080"]:
        config = describe_video(r["fourcc"], bytes.fromhex(r["record"]))
        assert (config.width, config.height) == (r["ffprobe"]["width"], r["ffprobe"]["height"])


@pytest.mark.parametrize("record", AUDIO, ids=[r["name"] for r in AUDIO])
def test_audio_record_matches_ffprobe(record: dict[str, Any]) -> None:
    probe = record["ffprobe"]
    config = describe_audio(record["fourcc"], bytes.fromhex(record["record"]))
    assert config.codec == record["fourcc"]
    assert config.codec_name == AUDIO_CODECS[probe["codec_name"]]
    profile = probe.get("profile")
    assert config.profile_name == (AUDIO_PROFILES[profile] if profile else None)
    assert config.sample_rate == int(probe["sample_rate"])
    assert config.channels == probe["channels"]


@pytest.mark.parametrize(
    "record",
    [r for r in AUDIO if r["fourcc"] == "Opus"],
    ids=[r["name"] for r in AUDIO if r["fourcc"] == "Opus"],
)
def test_opus_input_rate_is_what_the_encoder_was_fed(record: dict[str, Any]) -> None:
    """ffprobe always says 48 kHz (what Opus decodes to); the encoder's input is the source."""
    config = describe_audio("Opus", bytes.fromhex(record["record"]))
    assert config.input_sample_rate == record["source"]["sample_rate"]
    assert config.pre_skip is not None
    assert config.pre_skip > 0


def test_libaom_sends_an_empty_sequence_start_before_the_real_one() -> None:
    """FFmpeg with libaom has no extradata when the FLV header is written.

    The empty record is refused (CodecError); whoever feeds the monitor must keep the
    record that follows rather than treat the stream as malformed.
    """
    late = [r for r in VIDEO if r["empty_sequence_starts_before"]]
    assert {r["name"] for r in late} == {"av1-high444-854x480", "av1-main-timing-info-640x360"}
    with pytest.raises(CodecError):
        describe_video("av01", b"")
    for r in late:
        assert describe_video("av01", bytes.fromhex(r["record"])).width == r["ffprobe"]["width"]
