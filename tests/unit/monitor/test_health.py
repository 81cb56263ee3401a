"""assess(): each rule fired and not fired, thresholds honoured, no alarms while windows fill."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from stream_sync.monitor.health import (
    ALL_AUDIO_CODECS,
    ALL_VIDEO_CODECS,
    Health,
    HealthThresholds,
    IssueCode,
    Overall,
    Severity,
    assess,
    bitrate_range,
)
from stream_sync.monitor.meter import (
    Bitrate,
    Disagreement,
    MetadataClaims,
    StreamMeter,
    StreamSnapshot,
)
from stream_sync.rtmp.codecs import AudioConfig, VideoConfig

from .test_meter import START, Encoder, run

NOW = START + 60
DEFAULTS = HealthThresholds()
H264_1080 = VideoConfig("avc1", "H.264", 100, "High", 4.0, 1920, 1080, 8, "4:2:0")
AAC = AudioConfig("mp4a", "AAC", "AAC-LC", 48000, 2)


def healthy(**changes: Any) -> StreamSnapshot:
    """A minute into a well-configured 1080p30 H.264 stream at 4500 kbit/s."""
    rate = Bitrate(4500.0, 160.0, 4660.0)
    snapshot = StreamSnapshot(
        started_at=START,
        taken_at=NOW,
        last_update=NOW,
        bitrate_1s=rate,
        bitrate_5s=rate,
        bitrate_30s=rate,
        fps=30.0,
        fps_min_30s=29.9,
        fps_max_30s=30.0,
        keyframe_interval=2.0,
        keyframe_interval_max=2.0,
        since_keyframe=0.5,
        video=H264_1080,
        audio=AAC,
        metadata=None,
        disagreements=(),
        drift=0.3,
        drift_rate=0.0,
        timestamp_regressions=0,
        timestamp_jumps=0,
        recent_timestamp_errors=0,
        video_bytes=33_750_000,
        audio_bytes=1_200_000,
        video_frames=1800,
        audio_frames=2800,
        keyframes=30,
        avg_video_kbps=4500.0,
        avg_total_kbps=4660.0,
        peak_total_kbps_5s=4700.0,
        media_age=0.0,
        video_age=0.0,
        audio_age=0.0,
    )
    return dataclasses.replace(snapshot, **changes)


def codes(health: Health) -> list[str]:
    return [issue.code for issue in health.issues]


def test_a_healthy_stream_is_good() -> None:
    health = assess(healthy(), DEFAULTS, NOW)
    assert health == Health(Overall.GOOD, ())


# No data, no video, no audio ----------------------------------------------------------


def test_no_sample_yet_is_no_data() -> None:
    snapshot = StreamMeter(started_at=START).snapshot(START + 30)
    assert assess(snapshot, DEFAULTS, START + 30).overall is Overall.NO_DATA


def test_no_media_in_the_first_seconds_is_no_data_then_bad() -> None:
    meter = StreamMeter(started_at=START)
    meter.sample(START + 1, Encoder().counters)
    early = assess(meter.snapshot(START + 4), DEFAULTS, START + 4)
    assert early == Health(Overall.NO_DATA, ())
    meter.sample(START + 5, Encoder().counters)
    late = assess(meter.snapshot(START + 5), DEFAULTS, START + 5)
    assert late.overall is Overall.BAD
    assert codes(late) == [IssueCode.NO_VIDEO, IssueCode.NO_AUDIO]
    assert late.issues[0].message == "No video received"


def test_no_video_is_an_error_with_its_age() -> None:
    health = assess(healthy(video_age=12.0), DEFAULTS, NOW)
    assert health.overall is Overall.BAD
    (issue,) = health.issues
    assert (issue.code, issue.severity) == (IssueCode.NO_VIDEO, Severity.ERROR)
    assert issue.message == "No video for 12 s"


def test_ages_advance_to_now() -> None:
    snapshot = healthy(video_age=3.0, audio_age=3.0)
    assert assess(snapshot, DEFAULTS, NOW).overall is Overall.GOOD
    assert codes(assess(snapshot, DEFAULTS, NOW + 2)) == [IssueCode.NO_VIDEO, IssueCode.NO_AUDIO]


def test_no_audio_is_a_warning() -> None:
    health = assess(healthy(audio_age=7.0), DEFAULTS, NOW)
    assert health.overall is Overall.OK
    (issue,) = health.issues
    assert (issue.code, issue.severity) == (IssueCode.NO_AUDIO, Severity.WARNING)
    assert "Audio Mixer" in issue.fix
    received = assess(healthy(audio_age=60.0, audio_frames=0, audio=None), DEFAULTS, NOW)
    assert received.issues[0].message == "No audio received"


def test_media_rules_can_be_turned_off() -> None:
    audio_only = HealthThresholds(no_video_after=None)
    assert assess(healthy(video_age=60.0), audio_only, NOW).overall is Overall.GOOD
    silent_ok = HealthThresholds(no_audio_after=None)
    assert assess(healthy(audio_age=60.0), silent_ok, NOW).overall is Overall.GOOD


# Keyframes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "since", "flagged"),
    [
        (2.0, 0.5, False),
        (4.0, 0.5, False),
        (4.004, 0.1, False),  # 120 frames at 29.97 fps
        (6.0, 0.5, True),
        (2.0, 5.0, True),  # overdue: the next keyframe has not come yet
        (None, 8.0, True),  # at the start: one keyframe so far, long ago
    ],
)
def test_keyframe_interval(interval: float | None, since: float, flagged: bool) -> None:
    health = assess(healthy(keyframe_interval=interval, since_keyframe=since), DEFAULTS, NOW)
    assert (codes(health) == [IssueCode.KEYFRAME_INTERVAL_HIGH]) is flagged
    if flagged:
        assert health.overall is Overall.OK
        assert "Keyframe Interval: set 2 s" in health.issues[0].fix


def test_keyframe_threshold_is_honoured() -> None:
    lenient = HealthThresholds(max_keyframe_interval=10.0)
    assert assess(healthy(keyframe_interval=8.0), lenient, NOW).issues == ()
    strict = HealthThresholds(max_keyframe_interval=1.0)
    assert codes(assess(healthy(), strict, NOW)) == [IssueCode.KEYFRAME_INTERVAL_HIGH]


# Bitrate ------------------------------------------------------------------------------


def video_at(kbps: float) -> Bitrate:
    return Bitrate(kbps, 160.0, kbps + 160.0)


@pytest.mark.parametrize(
    ("kbps", "expected"),
    [
        (2000.0, [IssueCode.BITRATE_LOW]),
        (3000.0, []),
        (6000.0, []),
        (7000.0, [IssueCode.BITRATE_HIGH]),
    ],
)
def test_bitrate_for_1080p30_h264(kbps: float, expected: list[IssueCode]) -> None:
    health = assess(healthy(bitrate_30s=video_at(kbps)), DEFAULTS, NOW)
    assert codes(health) == expected


def test_bitrate_messages_name_the_class_and_the_setting() -> None:
    (low,) = assess(healthy(bitrate_30s=video_at(800.0)), DEFAULTS, NOW).issues
    assert low.severity is Severity.WARNING
    assert low.message == "Video bitrate 800 kbps is below the 3000 kbps recommended for 1080p30"
    assert low.fix.startswith("Settings > Output > Streaming > Bitrate: set at least 3000 kbps")


def test_bitrate_uses_the_frame_rate_class() -> None:
    at_60 = healthy(bitrate_30s=video_at(4000.0), fps=60.0)
    assert codes(assess(at_60, DEFAULTS, NOW)) == [IssueCode.BITRATE_LOW]  # 1080p60 wants 4500
    at_50 = healthy(bitrate_30s=video_at(8500.0), fps=50.0)
    assert codes(assess(at_50, DEFAULTS, NOW)) == []


def test_modern_codecs_get_the_codec_factor() -> None:
    hevc = dataclasses.replace(H264_1080, codec="hvc1", codec_name="HEVC", profile_name="Main")
    snapshot = healthy(video=hevc, bitrate_30s=video_at(2500.0))
    assert codes(assess(snapshot, DEFAULTS, NOW)) == []  # 0.7 x 3000 = 2100
    no_factor = HealthThresholds(codec_bitrate_factors={})
    assert codes(assess(snapshot, no_factor, NOW)) == [IssueCode.BITRATE_LOW]
    too_much = healthy(video=hevc, bitrate_30s=video_at(5000.0))
    assert codes(assess(too_much, DEFAULTS, NOW)) == [IssueCode.BITRATE_HIGH]  # > 4200


@pytest.mark.parametrize(
    ("size", "fps", "klass"),
    [
        ((1920, 1080), 30.0, (1080, 30)),
        ((1080, 1920), 30.0, (1080, 30)),  # vertical video costs what landscape does
        ((852, 478), 30.0, (480, 30)),
        ((1366, 768), 60.0, (720, 60)),
        ((2560, 1080), 30.0, (1080, 30)),
        ((3840, 2160), 59.94, (2160, 60)),
        ((160, 120), 15.0, (240, 30)),
        ((1280, 720), 24.0, (720, 30)),
    ],
)
def test_resolution_classes(size: tuple[int, int], fps: float, klass: tuple[int, int]) -> None:
    wanted = bitrate_range(*size, fps, "avc1", DEFAULTS)
    assert wanted is not None
    assert (wanted.height, wanted.fps) == klass


def test_bitrate_needs_the_30s_window_a_size_and_live_video() -> None:
    low = video_at(500.0)
    assert codes(assess(healthy(bitrate_30s=None, bitrate_5s=low), DEFAULTS, NOW)) == []
    unsized = dataclasses.replace(H264_1080, width=None, height=None)
    assert codes(assess(healthy(bitrate_30s=low, video=unsized), DEFAULTS, NOW)) == []
    stalled = assess(healthy(bitrate_30s=low, video_age=20.0), DEFAULTS, NOW)
    assert codes(stalled) == [IssueCode.NO_VIDEO]


def test_bitrate_falls_back_on_metadata_size_and_rate() -> None:
    """VP9 records carry no picture size; onMetaData does."""
    vp9 = VideoConfig("vp09", "VP9", 0, "Profile 0", 3.1, None, None, 8, "4:2:0")
    claims = MetadataClaims(width=1280, height=720, framerate=60.0)
    snapshot = healthy(video=vp9, metadata=claims, fps=None, bitrate_30s=video_at(1000.0))
    (issue,) = assess(snapshot, DEFAULTS, NOW).issues
    assert issue.code is IssueCode.BITRATE_LOW
    assert "720p60" in issue.message


def test_an_empty_bitrate_table_disables_the_rule() -> None:
    no_table = HealthThresholds(bitrates=())
    assert assess(healthy(bitrate_30s=video_at(10.0)), no_table, NOW).issues == ()


# Frame rate, drift, metadata, timestamps ----------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "flagged"),
    [(29.9, 30.0, False), (58.0, 60.0, False), (40.0, 60.0, True), (None, None, False)],
)
def test_framerate_stability(low: float | None, high: float | None, flagged: bool) -> None:
    health = assess(healthy(fps_min_30s=low, fps_max_30s=high), DEFAULTS, NOW)
    assert (codes(health) == [IssueCode.FRAMERATE_UNSTABLE]) is flagged
    if flagged:
        assert (
            health.issues[0].message == "Frame rate varied between 40 and 60 fps in the last 30 s"
        )


def test_framerate_spread_threshold_is_honoured() -> None:
    snapshot = healthy(fps_min_30s=40.0, fps_max_30s=60.0)
    assert assess(snapshot, HealthThresholds(max_fps_spread=0.5), NOW).issues == ()


@pytest.mark.parametrize(
    ("drift", "rate", "flagged"),
    [
        (5.0, 10.0, True),
        (5.0, 0.2, False),  # a constant lag is buffering
        (1.0, 10.0, False),  # growing, but not far behind yet
        (5.0, None, False),  # no 30 s window yet
        (None, None, False),
    ],
)
def test_falling_behind(drift: float | None, rate: float | None, flagged: bool) -> None:
    health = assess(healthy(drift=drift, drift_rate=rate), DEFAULTS, NOW)
    assert (codes(health) == [IssueCode.FALLING_BEHIND]) is flagged
    if flagged:
        assert health.overall is Overall.BAD
        assert health.issues[0].message == (
            "Stream is 5.0 s behind real time, losing 10.0 s per minute"
        )


def test_falling_behind_thresholds_are_honoured() -> None:
    snapshot = healthy(drift=5.0, drift_rate=10.0)
    assert assess(snapshot, HealthThresholds(falling_behind_drift=6.0), NOW).issues == ()
    assert assess(snapshot, HealthThresholds(falling_behind_rate=12.0), NOW).issues == ()


def test_metadata_mismatch_lists_every_disagreement() -> None:
    found = (Disagreement("width", 1280, 1920), Disagreement("framerate", 60.0, 30.0))
    (issue,) = assess(healthy(disagreements=found), DEFAULTS, NOW).issues
    assert (issue.code, issue.severity) == (IssueCode.METADATA_MISMATCH, Severity.WARNING)
    assert issue.message == (
        "Stream metadata disagrees with the stream: "
        "width 1280 claimed, 1920 measured; framerate 60 claimed, 30 measured"
    )


def test_timestamp_errors_only_while_recent() -> None:
    recent = healthy(recent_timestamp_errors=2, timestamp_regressions=1, timestamp_jumps=3)
    (issue,) = assess(recent, DEFAULTS, NOW).issues
    assert issue.code is IssueCode.TIMESTAMP_ERRORS
    assert issue.message == (
        "2 timestamp errors in the last 30 s (1 backwards, 3 jumps since the start)"
    )
    old = healthy(recent_timestamp_errors=0, timestamp_regressions=1, timestamp_jumps=3)
    assert assess(old, DEFAULTS, NOW).issues == ()


# Codecs -------------------------------------------------------------------------------


def test_every_recognised_codec_is_allowed_by_default() -> None:
    assert {"avc1", "hvc1", "av01", "vp09", "vvc1", "vp6f", "h263"} <= ALL_VIDEO_CODECS
    assert {"mp4a", "Opus", "fLaC", ".mp3", "ac-3", "speex"} <= ALL_AUDIO_CODECS
    vvc = dataclasses.replace(H264_1080, codec="vvc1")
    opus = AudioConfig("Opus", "Opus", None, 48000, 2)
    modern = healthy(video=vvc, audio=opus, bitrate_30s=video_at(3500.0))  # within 0.7 x range
    assert codes(assess(modern, DEFAULTS, NOW)) == []


def test_a_platform_narrows_the_codecs() -> None:
    platform = HealthThresholds(
        allowed_video_codecs=frozenset({"avc1"}), allowed_audio_codecs=frozenset({"mp4a"})
    )
    hevc = dataclasses.replace(H264_1080, codec="hvc1")
    opus = AudioConfig("Opus", "Opus", None, 48000, 2)
    health = assess(healthy(video=hevc, audio=opus, bitrate_30s=video_at(3500.0)), platform, NOW)
    assert health.overall is Overall.BAD
    assert codes(health) == [IssueCode.UNSUPPORTED_VIDEO_CODEC, IssueCode.UNSUPPORTED_AUDIO_CODEC]
    video, audio = health.issues
    assert video.message == "Video codec HEVC is not accepted here"
    assert video.fix == "Settings > Output > Streaming > Video Encoder: choose H.264"
    assert audio.fix == "Settings > Output > Streaming > Audio Encoder: choose AAC"


def test_without_a_record_the_codec_comes_from_metadata() -> None:
    """Legacy codecs (e.g. Sorenson H.263, MP3) have no sequence start to describe."""
    platform = HealthThresholds(allowed_video_codecs=frozenset({"avc1"}))
    claims = MetadataClaims(video_codec="h263", audio_codec=".mp3")
    health = assess(healthy(video=None, audio=None, metadata=claims), platform, NOW)
    assert codes(health) == [IssueCode.UNSUPPORTED_VIDEO_CODEC]


# Overall ------------------------------------------------------------------------------


def test_errors_come_first_and_make_it_bad() -> None:
    snapshot = healthy(keyframe_interval=8.0, drift=9.0, drift_rate=20.0)
    health = assess(snapshot, DEFAULTS, NOW)
    assert health.overall is Overall.BAD
    assert codes(health) == [IssueCode.FALLING_BEHIND, IssueCode.KEYFRAME_INTERVAL_HIGH]
    assert [i.severity for i in health.issues] == [Severity.ERROR, Severity.WARNING]


def test_health_is_json_friendly() -> None:
    health = assess(healthy(keyframe_interval=8.0), DEFAULTS, NOW)
    data = json.loads(json.dumps(health.as_dict()))
    assert data["overall"] == "ok"
    assert data["issues"][0]["code"] == "keyframe_interval_high"
    assert data["issues"][0]["severity"] == "warning"
    assert health.codes == ("keyframe_interval_high",)


# From the meter: the first seconds ----------------------------------------------------


def test_a_good_stream_raises_no_alarm_at_any_second() -> None:
    meter, encoder = StreamMeter(started_at=START), Encoder(video_kbps=4500.0)
    meter.video_config(H264_1080)
    meter.audio_config(AAC)
    meter.metadata({"width": 1920, "height": 1080, "framerate": 30, "videodatarate": 4500})
    for second in range(61):
        now = run(meter, encoder, second, since=second)
        health = assess(meter.snapshot(now), DEFAULTS, now)
        assert health == Health(Overall.GOOD, ()), second


def test_a_misconfigured_stream_is_flagged_only_when_each_rule_can_know() -> None:
    """8 s GOP (OBS's "auto" at 30 fps), 1000 kbit/s at 1080p, claiming 60 fps."""
    meter = StreamMeter(started_at=START)
    encoder = Encoder(video_kbps=1000.0, gop=8.0)
    meter.video_config(H264_1080)
    meter.audio_config(AAC)
    meter.metadata({"framerate": 60})
    seen: dict[str, int] = {}
    for second in range(41):
        now = run(meter, encoder, second, since=second)
        for code in codes(assess(meter.snapshot(now), DEFAULTS, now)):
            seen.setdefault(code, second)
    assert seen == {
        IssueCode.KEYFRAME_INTERVAL_HIGH: 5,  # 4.1 s of video without a keyframe
        IssueCode.METADATA_MISMATCH: 4,  # the 5 s frame rate window exists at 4 s
        IssueCode.BITRATE_LOW: 24,  # the 30 s window exists at 24 s
    }


def test_a_slow_encoder_is_flagged_falling_behind_once_the_window_exists() -> None:
    meter, encoder = StreamMeter(started_at=START), Encoder(video_kbps=4500.0)
    meter.video_config(H264_1080)
    first = None
    for second in range(41):
        now = run(meter, encoder, second, since=second, speed=0.7)
        if IssueCode.FALLING_BEHIND in codes(assess(meter.snapshot(now), DEFAULTS, now)):
            first = second if first is None else first
    assert first == 24
