"""StreamMeter: windows, frame rate, keyframes, drift and metadata from counter samples.

A synthetic encoder drives real MediaCounters the way the chunk reader does; wall
time is only ever an argument.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_sync.monitor.meter import Bitrate, Disagreement, MetadataClaims, StreamMeter
from stream_sync.rtmp.codecs import AudioConfig, VideoConfig, describe_audio, describe_video
from stream_sync.rtmp.counters import MediaCounters

START = 1_000.0
FULL_HD = VideoConfig("avc1", "H.264", 100, "High", 4.0, 1920, 1080, 8, "4:2:0")
AAC = AudioConfig("mp4a", "AAC", "AAC-LC", 48000, 2)
RECORDS = Path(__file__).parents[2] / "data" / "codec_records.json"


class Encoder:
    """Emits frames into MediaCounters in encoder time: video at `fps`, audio every 20 ms.

    `speed` below 1 is an encoder that cannot keep up with real time. Bytes per frame
    are constant, so bitrates over whole seconds are exact.
    """

    def __init__(
        self,
        *,
        fps: float = 30.0,
        video_kbps: float = 3000.0,
        audio_kbps: float = 128.0,
        gop: float = 2.0,
        video: bool = True,
        audio: bool = True,
        keyframe: Callable[[int], bool] | None = None,
    ) -> None:
        self.counters = MediaCounters()
        self.fps, self.video_kbps, self.audio_kbps = fps, video_kbps, audio_kbps
        self.video, self.audio = video, audio
        self.keyframe = keyframe or (lambda i: i % round(gop * fps) == 0)
        self.next_video = self.next_audio = 0
        self.offset_ms = 0  # added to every timestamp
        self.drop: Callable[[int], bool] = lambda i: False  # frames the encoder skips

    def advance(self, media_ms: float) -> None:
        """Send every frame whose timestamp is at or before media_ms."""
        c = self.counters
        while self.video and round(self.next_video * 1000 / self.fps) <= media_ms:
            ts = round(self.next_video * 1000 / self.fps) + self.offset_ms
            if not self.drop(self.next_video):
                c.video_bytes += round(self.video_kbps * 125 / self.fps)
                c.count_video_frame(ts, self.keyframe(self.next_video))
            self.next_video += 1
        while self.audio and self.next_audio * 20 <= media_ms:
            c.audio_bytes += round(self.audio_kbps * 125 / 50)
            c.count_audio_frame(self.next_audio * 20 + self.offset_ms)
            self.next_audio += 1


def run(
    meter: StreamMeter,
    encoder: Encoder,
    seconds: float,
    *,
    every: float = 1.0,
    speed: float = 1.0,
    since: float = 0.0,
) -> float:
    """Sample from `since` to `seconds` after START; returns the last sample's time."""
    steps = round((seconds - since) / every)
    now = START
    for step in range(steps + 1):
        elapsed = since + step * every
        now = START + elapsed
        encoder.advance(elapsed * 1000 * speed)
        meter.sample(now, encoder.counters)
    return now


def fresh(**kwargs: Any) -> tuple[StreamMeter, Encoder]:
    return StreamMeter(started_at=START), Encoder(**kwargs)


# Bitrate windows ----------------------------------------------------------------------


def test_constant_bitrate_is_exact_in_every_window() -> None:
    meter, encoder = fresh()
    now = run(meter, encoder, 40)
    snap = meter.snapshot(now)
    expected = Bitrate(3000.0, 128.0, 3128.0)
    for window in (snap.bitrate_1s, snap.bitrate_5s, snap.bitrate_30s):
        assert window is not None
        assert window.video == pytest.approx(expected.video)
        assert window.audio == pytest.approx(expected.audio)
        assert window.total == pytest.approx(expected.total)


def test_windows_are_none_until_samples_span_most_of_them() -> None:
    meter, encoder = fresh()
    assert meter.snapshot(START).bitrate_1s is None  # no sample at all
    run(meter, encoder, 0)
    assert meter.snapshot(START).bitrate_1s is None  # one sample: no span
    run(meter, encoder, 3, since=1)
    snap = meter.snapshot(START + 3)
    assert snap.bitrate_1s is not None
    assert snap.bitrate_5s is None  # 3 s < 80 % of 5 s
    run(meter, encoder, 4, since=4)
    assert meter.snapshot(START + 4).bitrate_5s is not None
    run(meter, encoder, 23, since=5)
    assert meter.snapshot(START + 23).bitrate_30s is None
    run(meter, encoder, 24, since=24)
    young = meter.snapshot(START + 24).bitrate_30s
    assert young is not None
    assert young.video == pytest.approx(3000.0)


def test_a_step_change_shows_in_one_second_before_thirty() -> None:
    meter, encoder = fresh()
    run(meter, encoder, 40)
    encoder.video_kbps = 6000.0
    now = run(meter, encoder, 41, since=41)
    snap = meter.snapshot(now)
    assert snap.bitrate_1s is not None
    assert snap.bitrate_5s is not None
    assert snap.bitrate_30s is not None
    assert snap.bitrate_1s.video == pytest.approx(6000.0)
    assert snap.bitrate_5s.video == pytest.approx(3600.0)  # 4 s at 3000, 1 s at 6000
    assert snap.bitrate_30s.video == pytest.approx(3100.0)


def test_windows_use_the_sample_closest_to_their_length() -> None:
    """Sampled every 0.3 s, the 1 s window spans 0.9 s (closer than 1.2 s)."""
    meter, encoder = fresh()
    now = run(meter, encoder, 30, every=0.3)
    window = meter._window(1.0)
    assert window is not None
    start, end = window
    assert end.t - start.t == pytest.approx(0.9)
    assert meter.snapshot(now).bitrate_1s is not None


def test_fast_sampling_stays_bounded_and_keeps_the_30s_window() -> None:
    meter, encoder = fresh()
    now = run(meter, encoder, 120, every=0.1)
    # Samples closer than 0.25 s coalesce: at most ~4 per second over 32 s, plus a batch.
    assert len(meter._times) <= 32 * 4 + 2 * 16
    snap = meter.snapshot(now)
    assert snap.bitrate_30s is not None
    assert snap.bitrate_30s.video == pytest.approx(3000.0, rel=0.01)


def test_slow_sampling_keeps_only_what_the_windows_need() -> None:
    meter, encoder = fresh()
    run(meter, encoder, 600)
    assert len(meter._times) <= 32 + 2 * 16 + 1


def test_peak_and_session_averages() -> None:
    meter, encoder = fresh()
    run(meter, encoder, 20)
    encoder.video_kbps = 9000.0
    run(meter, encoder, 30, since=21)
    encoder.video_kbps = 3000.0
    now = run(meter, encoder, 60, since=31)
    snap = meter.snapshot(now)
    assert snap.peak_total_kbps_5s == pytest.approx(9128.0)
    # 50 s at 3000 and 10 s at 9000 over 60 s.
    assert snap.avg_video_kbps == pytest.approx(4000.0, rel=0.01)
    assert snap.avg_total_kbps == pytest.approx(4128.0, rel=0.01)
    assert snap.video_bytes == encoder.counters.video_bytes
    assert snap.video_frames == encoder.counters.video_frames
    assert snap.audio_frames == encoder.counters.audio_frames
    assert snap.keyframes == encoder.counters.keyframes


# Frame rate ---------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [30.0, 60.0, 30000 / 1001, 25.0])
def test_frame_rate_comes_from_timestamps(fps: float) -> None:
    meter, encoder = fresh(fps=fps)
    now = run(meter, encoder, 12)
    assert meter.snapshot(now).fps == pytest.approx(fps, rel=0.002)


def test_frames_arriving_in_bursts_still_measure_30() -> None:
    """The network delivers two seconds of frames at once; the meter samples every 0.7 s."""
    meter, encoder = fresh()
    now = START
    for step in range(30):
        now = START + step * 0.7
        burst_end = (step * 0.7) // 2 * 2
        encoder.advance(burst_end * 1000)
        meter.sample(now, encoder.counters)
    snap = meter.snapshot(now)
    assert snap.fps == pytest.approx(30.0, rel=0.002)


def test_stability_range_needs_thirty_seconds_and_sees_a_dip() -> None:
    meter, encoder = fresh()
    run(meter, encoder, 20)
    assert meter.snapshot(START + 20).fps_min_30s is None
    run(meter, encoder, 30, since=21)
    steady = meter.snapshot(START + 30)
    assert steady.fps_min_30s == pytest.approx(30.0, rel=0.01)
    assert steady.fps_max_30s == pytest.approx(30.0, rel=0.01)
    # An encoder that skips every other frame for 3 s: timestamps advance regardless.
    encoder.drop = lambda i: i % 2 == 1
    run(meter, encoder, 33, since=31)
    snap = meter.snapshot(START + 33)
    assert snap.fps_min_30s is not None
    assert snap.fps_min_30s == pytest.approx(15.0, rel=0.05)
    assert snap.fps_max_30s == pytest.approx(30.0, rel=0.01)


def test_a_video_stall_reads_zero_fps_not_none() -> None:
    meter, encoder = fresh()
    run(meter, encoder, 10)
    counters = encoder.counters
    for second in range(11, 17):
        meter.sample(START + second, counters)  # nothing new
    snap = meter.snapshot(START + 16)
    assert snap.fps == 0.0
    assert snap.bitrate_1s is not None
    assert snap.bitrate_1s.total == 0.0


# Keyframes ----------------------------------------------------------------------------


@pytest.mark.parametrize("every", [1.0, 0.3])
def test_keyframe_interval_two_seconds(every: float) -> None:
    meter, encoder = fresh(gop=2.0)
    now = run(meter, encoder, 20, every=every)
    snap = meter.snapshot(now)
    assert snap.keyframe_interval == pytest.approx(2.0)
    assert snap.keyframe_interval_max == pytest.approx(2.0)
    assert snap.since_keyframe is not None
    assert 0 <= snap.since_keyframe < 2.0


def test_several_keyframes_between_samples_average() -> None:
    meter, encoder = fresh(gop=0.5)
    now = run(meter, encoder, 10, every=1.0)
    assert meter.snapshot(now).keyframe_interval == pytest.approx(0.5)


def test_keyframe_max_remembers_a_ten_second_gap() -> None:
    keyframes_at = {0, 2, 4, 6, 16, 18, 20, 22}
    meter, encoder = fresh(keyframe=lambda i: i % 30 == 0 and i // 30 in keyframes_at)
    run(meter, encoder, 12)
    overdue = meter.snapshot(START + 12)
    assert overdue.keyframe_interval == pytest.approx(2.0)
    assert overdue.since_keyframe == pytest.approx(6.0)  # visible before the gap ends
    now = run(meter, encoder, 24, since=13)
    snap = meter.snapshot(now)
    assert snap.keyframe_interval == pytest.approx(2.0)
    assert snap.keyframe_interval_max == pytest.approx(10.0)


# Drift --------------------------------------------------------------------------------


def test_a_real_time_encoder_does_not_drift() -> None:
    meter, encoder = fresh()
    now = run(meter, encoder, 60)
    snap = meter.snapshot(now)
    assert snap.drift is not None
    assert abs(snap.drift) < 0.05
    assert snap.drift_rate is not None
    assert abs(snap.drift_rate) < 0.1


def test_an_encoder_at_seventy_percent_falls_behind_18_seconds_a_minute() -> None:
    meter, encoder = fresh()
    now = run(meter, encoder, 60, speed=0.7)
    snap = meter.snapshot(now)
    assert snap.drift == pytest.approx(18.0, abs=0.05)
    assert snap.drift_rate == pytest.approx(18.0, abs=0.1)


def test_drift_rate_waits_for_the_30s_window() -> None:
    meter, encoder = fresh()
    now = run(meter, encoder, 10, speed=0.7)
    snap = meter.snapshot(now)
    assert snap.drift == pytest.approx(3.0, abs=0.05)
    assert snap.drift_rate is None


def test_timestamps_that_start_far_from_zero_are_taken_as_on_time() -> None:
    meter, encoder = fresh()
    encoder.offset_ms = 3_600_000  # a relay that kept its source's clock
    now = run(meter, encoder, 40)
    snap = meter.snapshot(now)
    assert snap.drift == pytest.approx(0.0, abs=0.05)  # anchored at the first sample


def test_a_timestamp_jump_is_counted_and_does_not_move_drift() -> None:
    meter, encoder = fresh()
    run(meter, encoder, 20)
    before = meter.snapshot(START + 20).drift
    encoder.offset_ms = 60_000  # the encoder's clock leaps a minute ahead
    now = run(meter, encoder, 40, since=21)
    snap = meter.snapshot(now)
    assert snap.timestamp_jumps == 2  # video and audio each leapt
    assert snap.timestamp_regressions == 0
    assert before is not None
    assert snap.drift == pytest.approx(before, abs=0.05)
    assert snap.fps == pytest.approx(30.0, rel=0.002)  # the 5 s window is past the jump


# Timestamp errors, ages, resets -------------------------------------------------------


def test_timestamp_errors_pass_through_and_age_out_of_the_recent_count() -> None:
    meter, encoder = fresh()
    run(meter, encoder, 10)
    encoder.counters.count_video_frame(0, keyframe=False)  # backwards
    meter.sample(START + 11, encoder.counters)
    snap = meter.snapshot(START + 11)
    assert snap.timestamp_regressions == 1
    assert snap.recent_timestamp_errors == 1
    run(meter, encoder, 50, since=12)
    later = meter.snapshot(START + 50)
    assert later.timestamp_regressions == 1  # since the start
    assert later.recent_timestamp_errors == 0  # none in the last 30 s


def test_media_age_shows_a_stalled_encoder() -> None:
    meter, encoder = fresh()
    run(meter, encoder, 10)
    for second in range(11, 21):
        meter.sample(START + second, encoder.counters)
    snap = meter.snapshot(START + 20.5)
    assert snap.media_age == pytest.approx(10.5)
    assert snap.video_age == pytest.approx(10.5)
    assert snap.audio_age == pytest.approx(10.5)
    assert snap.last_update == START + 20


def test_audio_only_stops_while_video_continues() -> None:
    meter, encoder = fresh()
    run(meter, encoder, 10)
    encoder.audio = False
    now = run(meter, encoder, 20, since=11)
    snap = meter.snapshot(now)
    assert snap.audio_age == pytest.approx(10.0)
    assert snap.video_age == 0.0
    assert snap.media_age == 0.0


def test_before_any_media_ages_count_from_the_start() -> None:
    meter = StreamMeter(started_at=START)
    meter.sample(START + 1, MediaCounters())
    snap = meter.snapshot(START + 3)
    assert (snap.media_age, snap.video_age, snap.audio_age) == (3.0, 3.0, 3.0)
    assert snap.drift is None
    assert snap.fps is None


def test_samples_that_do_not_move_forward_are_ignored() -> None:
    meter, encoder = fresh()
    run(meter, encoder, 5)
    encoder.advance(9000)
    meter.sample(START + 5, encoder.counters)  # same time, more bytes: ignored
    meter.sample(START + 4, encoder.counters)
    snap = meter.snapshot(START + 5)
    assert snap.last_update == START + 5
    assert snap.bitrate_1s is not None
    assert snap.bitrate_1s.video == pytest.approx(3000.0)


def test_new_counters_restart_the_windows() -> None:
    meter, encoder = fresh()
    run(meter, encoder, 10)
    _, replacement = fresh()
    meter.sample(START + 11, replacement.counters)
    snap = meter.snapshot(START + 11)
    assert snap.bitrate_1s is None
    assert snap.video_bytes == 0
    assert snap.keyframe_interval_max == pytest.approx(2.0)  # session maxima survive
    assert snap.video_age == 0.0  # the restart is not mistaken for a stall
    for second in range(1, 10):  # the new publisher's clock starts at 0
        replacement.advance(second * 1000)
        meter.sample(START + 11 + second, replacement.counters)
    later = meter.snapshot(START + 20)
    assert later.drift == pytest.approx(0.0, abs=0.05)  # not 11 s behind
    assert later.bitrate_5s is not None
    assert later.bitrate_5s.video == pytest.approx(3000.0)


# Configs and metadata -----------------------------------------------------------------


def test_configs_pass_through() -> None:
    meter = StreamMeter(started_at=START)
    meter.video_config(FULL_HD)
    meter.audio_config(AAC)
    snap = meter.snapshot(START)
    assert (snap.video, snap.audio) == (FULL_HD, AAC)
    meter.video_config(None)
    assert meter.snapshot(START).video is None


def test_metadata_is_read_leniently() -> None:
    claims = MetadataClaims.parse(
        {
            "width": "1280",
            "height": 720.0,
            "fps": " 59.94 ",
            "videodatarate": 4500,
            "audiodatarate": float("nan"),
            "audiosamplerate": 44.1,
            "videocodecid": 7.0,
            "audiocodecid": "10",
            "encoder": "obs-output module (libobs version 30.1.2)\x00\n" + "x" * 500,
        }
    )
    assert (claims.width, claims.height) == (1280, 720)
    assert claims.framerate == pytest.approx(59.94)
    assert claims.video_kbps == 4500.0
    assert claims.audio_kbps is None
    assert claims.audio_sample_rate == 44100
    assert (claims.video_codec, claims.audio_codec) == ("avc1", "mp4a")
    assert claims.encoder is not None
    assert claims.encoder.startswith("obs-output module (libobs version 30.1.2)x")
    assert len(claims.encoder) == 128


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"width": True, "height": -5, "framerate": "fast"}, MetadataClaims()),
        ({"videodatarate": 0.0, "framerate": float("inf")}, MetadataClaims()),
        ({"width": [1920], "encoder": 42}, MetadataClaims()),
        ({"videocodecid": 1752589105.0}, MetadataClaims(video_codec="hvc1")),
        (
            {"videocodecid": "av01", "audiocodecid": 0},
            MetadataClaims(video_codec="av01", audio_codec="lpcm"),
        ),
        ({"videocodecid": 9, "audiocodecid": 1.5}, MetadataClaims(video_codec="codec9")),
        ({"framerate": 25, "fps": 50}, MetadataClaims(framerate=25.0)),
    ],
)
def test_metadata_edge_values(values: dict[str, Any], expected: MetadataClaims) -> None:
    assert MetadataClaims.parse(values) == expected


def stream_with_claims(claims: dict[str, Any], *, seconds: float = 40) -> StreamMeter:
    meter, encoder = fresh()
    meter.video_config(FULL_HD)
    meter.metadata(claims)
    run(meter, encoder, seconds)
    return meter


def test_metadata_that_matches_raises_no_disagreement() -> None:
    claims = {"width": 1920, "height": 1080, "framerate": 29.97, "videodatarate": 2500}
    assert stream_with_claims(claims).snapshot(START + 40).disagreements == ()


def test_metadata_disagreements() -> None:
    claims = {"width": 1280, "height": 720, "framerate": 60, "videodatarate": 6500}
    snap = stream_with_claims(claims).snapshot(START + 40)
    assert snap.disagreements == (
        Disagreement("width", 1280, 1920),
        Disagreement("height", 720, 1080),
        Disagreement("framerate", 60.0, pytest.approx(30.0, rel=0.002)),  # type: ignore[arg-type]
        Disagreement("videodatarate", 6500.0, pytest.approx(3000.0)),  # type: ignore[arg-type]
    )


def test_bitrate_disagreement_waits_for_the_30s_window() -> None:
    snap = stream_with_claims({"videodatarate": 6500}, seconds=10).snapshot(START + 10)
    assert snap.disagreements == ()


def test_real_ffmpeg_metadata_agrees_with_its_own_records() -> None:
    """FFmpeg's onMetaData (legacy ids and E-RTMP FourCC numbers) read like the records."""
    records = json.loads(RECORDS.read_text())["records"]
    for record in records:
        claims = MetadataClaims.parse(record["onMetaData"])
        meter = StreamMeter(started_at=START)
        meter.metadata(record["onMetaData"])
        body = bytes.fromhex(record["record"])
        if record["media"] == "video":
            meter.video_config(describe_video(record["fourcc"], body))
            assert claims.video_codec == record["fourcc"], record["name"]
            assert claims.video_kbps is None  # FFmpeg writes 0 for "unknown"
            assert meter.snapshot(START).disagreements == (), record["name"]
        else:
            meter.audio_config(describe_audio(record["fourcc"], body))
            assert claims.audio_codec == record["fourcc"], record["name"]
            assert claims.audio_sample_rate == record["source"]["sample_rate"], record["name"]
        assert claims.encoder is not None
        assert claims.encoder.startswith("Lavf")


def test_each_snapshot_dict_is_the_callers_own() -> None:
    meter, encoder = fresh()
    meter.video_config(FULL_HD)
    now = run(meter, encoder, 5)
    first = meter.snapshot(now).as_dict()
    first["video"]["width"] = 1  # a consumer that edits what it got
    assert meter.snapshot(now).as_dict()["video"]["width"] == 1920


def test_snapshot_is_json_friendly() -> None:
    meter, encoder = fresh()
    meter.video_config(FULL_HD)
    meter.audio_config(AAC)
    meter.metadata({"width": 1280, "height": 720})
    now = run(meter, encoder, 35)
    snapshot = meter.snapshot(now)
    data = json.loads(json.dumps(snapshot.as_dict()))
    assert data == json.loads(json.dumps(dataclasses.asdict(snapshot)))  # the same, cheaper
    assert data["bitrate_30s"]["video"] == pytest.approx(3000.0)
    assert data["video"]["width"] == 1920
    assert data["audio"]["sample_rate"] == 48000
    assert data["metadata"]["width"] == 1280
    assert data["disagreements"][0] == {"field": "width", "claimed": 1280, "measured": 1920}
    assert not any(isinstance(v, float) and math.isnan(v) for v in data.values())
