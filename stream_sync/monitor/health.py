"""Stream health from a snapshot: machine-readable issues, each with a one-line OBS fix.

Like YouTube's stream health, `assess` turns measurements into a short list of
problems the streamer can act on. Pure: the snapshot, the thresholds and `now` in,
a `Health` out. Rules that need a window wait for it: nothing that needs 30 s of
data fires before `StreamMeter` reports the 30 s window, so the first seconds of a
stream never raise false alarms.

Severities: an error means viewers are (or soon will be) affected: no video, an
unsupported codec, a stream falling behind real time. Everything else is a warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stream_sync.rtmp import flv

from .meter import StreamSnapshot


class IssueCode(StrEnum):
    KEYFRAME_INTERVAL_HIGH = "keyframe_interval_high"
    BITRATE_LOW = "bitrate_low"
    BITRATE_HIGH = "bitrate_high"
    FRAMERATE_UNSTABLE = "framerate_unstable"
    NO_AUDIO = "no_audio"
    NO_VIDEO = "no_video"
    FALLING_BEHIND = "falling_behind"
    METADATA_MISMATCH = "metadata_mismatch"
    UNSUPPORTED_VIDEO_CODEC = "unsupported_video_codec"
    UNSUPPORTED_AUDIO_CODEC = "unsupported_audio_codec"
    TIMESTAMP_ERRORS = "timestamp_errors"


class Severity(StrEnum):
    WARNING = "warning"
    ERROR = "error"


class Overall(StrEnum):
    GOOD = "good"  # no issues
    OK = "ok"  # warnings only
    BAD = "bad"  # at least one error
    NO_DATA = "no_data"  # nothing measured yet


@dataclass(frozen=True, slots=True)
class BitrateRange:
    """Recommended video bitrate (kbit/s, H.264) for a resolution class and frame rate.

    `height` names the class by its 16:9 picture (720 means 1280x720); streams are
    classed by pixel count, so vertical and odd sizes land where their cost does.
    """

    height: int
    fps: int
    min_kbps: float
    max_kbps: float


# YouTube's long-standing live encoder ranges for H.264. YouTube lists 480p and below
# at 30 fps only; the 60 fps rows there are 1.5 times the 30 fps ones.
DEFAULT_BITRATES = (
    BitrateRange(240, 30, 300, 700),
    BitrateRange(240, 60, 450, 1050),
    BitrateRange(360, 30, 400, 1000),
    BitrateRange(360, 60, 600, 1500),
    BitrateRange(480, 30, 500, 2000),
    BitrateRange(480, 60, 750, 3000),
    BitrateRange(720, 30, 1500, 4000),
    BitrateRange(720, 60, 2250, 6000),
    BitrateRange(1080, 30, 3000, 6000),
    BitrateRange(1080, 60, 4500, 9000),
    BitrateRange(1440, 30, 6000, 13000),
    BitrateRange(1440, 60, 9000, 18000),
    BitrateRange(2160, 30, 13000, 34000),
    BitrateRange(2160, 60, 20000, 51000),
)

# Every codec the protocol core recognises: legacy FLV ids (by the names flv.py gives
# them) and Enhanced RTMP FourCCs. A platform narrows these in its settings.
ALL_VIDEO_CODECS = frozenset(flv.LEGACY_VIDEO_CODECS.values()) | {
    "avc1",
    "hvc1",
    "av01",
    "vp08",
    "vp09",
    "vvc1",
}
ALL_AUDIO_CODECS = frozenset(flv.LEGACY_AUDIO_CODECS.values()) | {
    "mp4a",
    "Opus",
    "fLaC",
    "ac-3",
    "ec-3",
    ".mp3",
}
_CODEC_NAMES = {
    "avc1": "H.264",
    "hvc1": "HEVC",
    "av01": "AV1",
    "vp08": "VP8",
    "vp09": "VP9",
    "vvc1": "VVC",
    "mp4a": "AAC",
    "Opus": "Opus",
    "fLaC": "FLAC",
    ".mp3": "MP3",
    "ac-3": "AC-3",
    "ec-3": "E-AC-3",
}
# Measured keyframe intervals are in whole milliseconds and GOPs in whole frames
# (120 frames at 29.97 fps is 4.004 s): this much above the limit still passes.
_KEYFRAME_SLACK = 0.1
_GRACE = 5.0  # no_data lasts this long when both "no media" rules are disabled


def _modern_codec_factors() -> dict[str, float]:
    return {"hvc1": 0.7, "av01": 0.7, "vp09": 0.7, "vvc1": 0.7}


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """What counts as a problem; every field can come from the settings."""

    # Seconds between keyframes, above which players and segmenters suffer (YouTube
    # asks for at most 4 s and recommends 2 s).
    max_keyframe_interval: float = 4.0
    # Recommended video bitrate per resolution class and frame rate (H.264).
    bitrates: tuple[BitrateRange, ...] = DEFAULT_BITRATES
    # Multiplier on both ends of a bitrate range per codec FourCC: HEVC, AV1 and VP9
    # need roughly 30 % less than H.264 for the same picture.
    codec_bitrate_factors: Mapping[str, float] = field(default_factory=_modern_codec_factors)
    # Frame rate stability: (highest - lowest) / highest of the ~1 s frame rates over
    # the last 30 s. A dropped frame a second at 60 fps is 1.7 %; an encoder that
    # skips frames under load swings far more than 20 %.
    max_fps_spread: float = 0.2
    # Seconds without video (audio) frames, since the start or the last frame, before
    # no_video (no_audio) is raised; None turns the rule off (audio-only platforms).
    no_video_after: float | None = 5.0
    no_audio_after: float | None = 5.0
    # Falling behind real time: drift above this many seconds and still growing by
    # more than falling_behind_rate seconds per minute over the last 30 s (a constant
    # lag is buffering, not an encoder that cannot keep up).
    falling_behind_drift: float = 2.0
    falling_behind_rate: float = 1.0
    # Codecs the platform accepts, by FourCC (or flv.py's name for legacy ids).
    allowed_video_codecs: frozenset[str] = ALL_VIDEO_CODECS
    allowed_audio_codecs: frozenset[str] = ALL_AUDIO_CODECS


@dataclass(frozen=True, slots=True)
class HealthIssue:
    code: IssueCode
    severity: Severity
    message: str  # one line, with the measured values
    fix: str  # one line, phrased for OBS Studio

    def as_dict(self) -> dict[str, str]:
        return {
            "code": str(self.code),
            "severity": str(self.severity),
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class Health:
    overall: Overall
    issues: tuple[HealthIssue, ...] = ()  # errors first

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(str(issue.code) for issue in self.issues)

    def as_dict(self) -> dict[str, Any]:
        return {"overall": str(self.overall), "issues": [i.as_dict() for i in self.issues]}


def bitrate_range(
    width: int, height: int, fps: float, codec: str | None, thresholds: HealthThresholds
) -> BitrateRange | None:
    """The recommended range for a picture, scaled for the codec; None without a table."""
    if not thresholds.bitrates:
        return None
    pixels = width * height
    classes = sorted({row.height for row in thresholds.bitrates})
    # The largest class not bigger than the picture (10 % tolerance: 852x478 is 480p).
    chosen = classes[0]
    for klass in classes:
        if round(klass * 16 / 9) * klass <= pixels * 1.1:
            chosen = klass
    rows = [row for row in thresholds.bitrates if row.height == chosen]
    row = min(rows, key=lambda r: abs(r.fps - fps))
    factor = thresholds.codec_bitrate_factors.get(codec or "", 1.0)
    return BitrateRange(row.height, row.fps, row.min_kbps * factor, row.max_kbps * factor)


def _name(codec: str) -> str:
    return _CODEC_NAMES.get(codec, codec)


def _names(codecs: frozenset[str]) -> str:
    known = sorted(_name(codec) for codec in codecs)
    return ", ".join(known) if known else "none"


def assess(snapshot: StreamSnapshot, thresholds: HealthThresholds, now: float) -> Health:
    """The stream's health at `now` (ages in the snapshot are advanced to `now`)."""
    s, t = snapshot, thresholds
    later = max(0.0, now - s.taken_at)
    grace = min(
        (after for after in (t.no_video_after, t.no_audio_after) if after is not None),
        default=_GRACE,
    )
    no_media = not (s.video_bytes or s.audio_bytes)
    if s.last_update is None or (no_media and now - s.started_at < grace):
        return Health(Overall.NO_DATA)
    issues: list[HealthIssue] = []

    def add(code: IssueCode, severity: Severity, message: str, fix: str) -> None:
        issues.append(HealthIssue(code, severity, message, fix))

    video_codec = s.video.codec if s.video else (s.metadata.video_codec if s.metadata else None)
    if video_codec is not None and video_codec not in t.allowed_video_codecs:
        add(
            IssueCode.UNSUPPORTED_VIDEO_CODEC,
            Severity.ERROR,
            f"Video codec {_name(video_codec)} is not accepted here",
            "Settings > Output > Streaming > Video Encoder: choose "
            f"{_names(t.allowed_video_codecs)}",
        )
    audio_codec = s.audio.codec if s.audio else (s.metadata.audio_codec if s.metadata else None)
    if audio_codec is not None and audio_codec not in t.allowed_audio_codecs:
        add(
            IssueCode.UNSUPPORTED_AUDIO_CODEC,
            Severity.ERROR,
            f"Audio codec {_name(audio_codec)} is not accepted here",
            "Settings > Output > Streaming > Audio Encoder: choose "
            f"{_names(t.allowed_audio_codecs)}",
        )

    video_age = s.video_age + later
    no_video = t.no_video_after is not None and video_age >= t.no_video_after
    if no_video:
        add(
            IssueCode.NO_VIDEO,
            Severity.ERROR,
            f"No video for {video_age:.0f} s" if s.video_frames else "No video received",
            "Check that the scene has a visible source, then stop and restart streaming",
        )
    audio_age = s.audio_age + later
    if t.no_audio_after is not None and audio_age >= t.no_audio_after:
        add(
            IssueCode.NO_AUDIO,
            Severity.WARNING,
            f"No audio for {audio_age:.0f} s" if s.audio_frames else "No audio received",
            "Audio Mixer: unmute a source, and check Settings > Audio > Desktop Audio / Mic",
        )

    drift = -math.inf if s.drift is None else s.drift
    drift_rate = -math.inf if s.drift_rate is None else s.drift_rate
    if drift > t.falling_behind_drift and drift_rate > t.falling_behind_rate:
        add(
            IssueCode.FALLING_BEHIND,
            Severity.ERROR,
            f"Stream is {drift:.1f} s behind real time, losing {drift_rate:.1f} s per minute",
            "Settings > Output > Streaming: pick a hardware encoder or a faster preset, "
            "or lower Settings > Video > FPS",
        )

    intervals = [x for x in (s.keyframe_interval, s.since_keyframe) if x is not None]
    if s.video_frames and intervals:
        interval = max(intervals)
        if interval > t.max_keyframe_interval + _KEYFRAME_SLACK:
            add(
                IssueCode.KEYFRAME_INTERVAL_HIGH,
                Severity.WARNING,
                f"Keyframe interval is {interval:.1f} s "
                f"(at most {t.max_keyframe_interval:g} s; 2 s recommended)",
                "Settings > Output > Streaming > Keyframe Interval: set 2 s (0 means auto)",
            )

    if not no_video:  # a stalled stream's bitrate is no advice on the encoder's setting
        bitrate = _bitrate_issue(s, t)
        if bitrate is not None:
            issues.append(bitrate)

    if s.fps_min_30s is not None and s.fps_max_30s:
        spread = (s.fps_max_30s - s.fps_min_30s) / s.fps_max_30s
        if spread > t.max_fps_spread:
            add(
                IssueCode.FRAMERATE_UNSTABLE,
                Severity.WARNING,
                f"Frame rate varied between {s.fps_min_30s:.0f} and {s.fps_max_30s:.0f} fps "
                "in the last 30 s",
                "View > Stats: if frames are skipped, use a faster encoder preset "
                "or lower Settings > Video > FPS",
            )

    if s.disagreements:
        claims = "; ".join(
            f"{d.field} {d.claimed:g} claimed, {d.measured:g} measured" for d in s.disagreements
        )
        add(
            IssueCode.METADATA_MISMATCH,
            Severity.WARNING,
            f"Stream metadata disagrees with the stream: {claims}",
            "Stop and restart streaming after changing Settings > Video or Settings > Output",
        )

    if s.recent_timestamp_errors:
        add(
            IssueCode.TIMESTAMP_ERRORS,
            Severity.WARNING,
            f"{s.recent_timestamp_errors} timestamp errors in the last 30 s "
            f"({s.timestamp_regressions} backwards, {s.timestamp_jumps} jumps since the start)",
            "Stop and restart streaming; if it recurs, update OBS and the capture device driver",
        )

    issues.sort(key=lambda issue: issue.severity is not Severity.ERROR)
    if any(issue.severity is Severity.ERROR for issue in issues):
        return Health(Overall.BAD, tuple(issues))
    return Health(Overall.OK if issues else Overall.GOOD, tuple(issues))


def _bitrate_issue(s: StreamSnapshot, t: HealthThresholds) -> HealthIssue | None:
    """bitrate_low / bitrate_high from the 30 s video bitrate, once that window exists."""
    if s.bitrate_30s is None:
        return None
    width, height = (s.video.width, s.video.height) if s.video else (None, None)
    if (width is None or height is None) and s.metadata:
        width, height = s.metadata.width, s.metadata.height
    if width is None or height is None:
        return None
    fps = s.fps or (s.metadata.framerate if s.metadata else None) or 30.0
    wanted = bitrate_range(width, height, fps, s.video.codec if s.video else None, t)
    if wanted is None:
        return None
    kbps = s.bitrate_30s.video
    label = f"{wanted.height}p{wanted.fps}"
    if kbps < wanted.min_kbps:
        return HealthIssue(
            IssueCode.BITRATE_LOW,
            Severity.WARNING,
            f"Video bitrate {kbps:.0f} kbps is below the {wanted.min_kbps:.0f} kbps "
            f"recommended for {label}",
            f"Settings > Output > Streaming > Bitrate: set at least {wanted.min_kbps:.0f} kbps, "
            "or lower Settings > Video > Output (Scaled) Resolution",
        )
    if kbps > wanted.max_kbps:
        return HealthIssue(
            IssueCode.BITRATE_HIGH,
            Severity.WARNING,
            f"Video bitrate {kbps:.0f} kbps is above the {wanted.max_kbps:.0f} kbps "
            f"recommended for {label}",
            f"Settings > Output > Streaming > Bitrate: set at most {wanted.max_kbps:.0f} kbps",
        )
    return None
