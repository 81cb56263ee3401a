"""Per-stream measurements from sampled media counters: pure logic, `now` is an argument.

The RTMP hot path only bumps integers (`MediaCounters`); the ingest node hands them to
`StreamMeter.sample` about once a second per live stream, and everything here is
derived from those samples, never from frames. `sample` allocates one small tuple and
does bounded work (one binary search over at most a few hundred samples; old samples
are dropped in batches); `snapshot` computes the views on demand.

Conventions:

- A window of W seconds ends at the latest sample and starts at the stored sample
  whose time is closest to W seconds earlier. It reports only once samples span at
  least 80 % of W (`MIN_FILL`), so a young stream shows `None` rather than a 1 s
  figure labelled 30 s. Rates divide by the real span, so irregular sampling does
  not bias them.
- Frame rate and keyframe intervals come from the encoder's own timestamps (RTMP
  milliseconds), so frames arriving in bursts do not distort them; any span that
  contains a timestamp regression or jump is not measured.
- Drift is wall time elapsed since the publish started minus media time elapsed
  (the later of the last video and audio timestamps): an encoder that cannot keep
  up falls further behind. Media time starts at 0 (what publishers send) unless the
  first timestamp seen is implausibly far ahead, and a timestamp discontinuity
  re-anchors it so drift stays continuous (the discontinuity is counted instead).
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from stream_sync.rtmp import flv
from stream_sync.rtmp.codecs import AudioConfig, VideoConfig
from stream_sync.rtmp.counters import TIMESTAMP_JUMP_MS, MediaCounters
from stream_sync.state.codec import field_names

MIN_FILL = 0.8  # a window reports once its samples span this fraction of it
MIN_SPACING = 0.25  # samples closer than this coalesce, which bounds the list
HORIZON = 32.0  # seconds of samples kept: the 30 s window plus slack
FPS_WINDOW = 5.0
FPS_SLICE = 0.95  # frame rate is also measured per ~1 s slice, for stability
STABILITY_WINDOW = 30.0
FRAMERATE_TOLERANCE = 0.10  # onMetaData framerate vs measured, relative
DATARATE_TOLERANCE = 0.50  # onMetaData videodatarate vs measured 30 s video bitrate
_TRIM_BATCH = 16  # drop old samples in batches: amortised O(1)
_MAX_SLICES = 64  # > 30 s of slices at >= 0.95 s each
_MAX_TEXT = 128  # onMetaData strings are the peer's: bounded


class _Sample(NamedTuple):
    t: float
    video_bytes: int
    audio_bytes: int
    video_frames: int
    audio_frames: int
    keyframes: int
    last_video_ts: int
    last_audio_ts: int
    last_keyframe_ts: int
    regressions: int
    jumps: int
    drift: float | None


@dataclass(frozen=True, slots=True)
class Bitrate:
    """kbit/s over one window."""

    video: float
    audio: float
    total: float


@dataclass(frozen=True, slots=True)
class MetadataClaims:
    """What onMetaData says, normalised; None wherever the claim is absent or unusable."""

    width: int | None = None
    height: int | None = None
    framerate: float | None = None
    video_kbps: float | None = None  # videodatarate; 0 (FFmpeg's "unknown") reads as None
    audio_kbps: float | None = None
    audio_sample_rate: int | None = None
    video_codec: str | None = None  # FourCC (legacy ids mapped like flv.py does)
    audio_codec: str | None = None
    encoder: str | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> MetadataClaims:
        """Lenient: encoders send numbers as floats, ints or strings, and some omit fields."""
        framerate = _number(values.get("framerate"))
        if framerate is None:
            framerate = _number(values.get("fps"))
        rate = _number(values.get("audiosamplerate"))
        if rate is not None and rate < 1000:  # a few encoders say 44.1 (kHz)
            rate *= 1000
        return cls(
            width=_size(values.get("width")),
            height=_size(values.get("height")),
            framerate=framerate if framerate is not None and framerate <= 1000 else None,
            video_kbps=_number(values.get("videodatarate")),
            audio_kbps=_number(values.get("audiodatarate")),
            audio_sample_rate=round(rate) if rate is not None and rate <= 1_000_000 else None,
            video_codec=_codec(values.get("videocodecid"), flv.LEGACY_VIDEO_CODECS),
            audio_codec=_codec(values.get("audiocodecid"), flv.LEGACY_AUDIO_CODECS),
            encoder=_text(values.get("encoder")),
        )


def _finite(value: object) -> float | None:
    """A finite number from a float, an int or a numeric string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) > 32:
            return None
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _number(value: object) -> float | None:
    """A positive claim; FFmpeg writes 0 for what it does not know."""
    number = _finite(value)
    return number if number is not None and number > 0 else None


def _size(value: object) -> int | None:
    number = _number(value)
    return round(number) if number is not None and number <= 65536 else None


def _codec(value: object, legacy: Mapping[int, str]) -> str | None:
    """A legacy FLV codec id, an E-RTMP FourCC as a number, or a FourCC string."""
    if isinstance(value, str) and len(value) == 4 and value.isascii() and value.isprintable():
        return value
    number = _finite(value)
    if number is None or number < 0 or number != int(number):
        return None
    code = int(number)
    if code < 256:  # 0 is a real legacy id (linear PCM)
        return legacy.get(code, f"codec{code}")
    if code < 1 << 32:
        fourcc = code.to_bytes(4, "big").decode("latin-1")
        if fourcc.isascii() and fourcc.isprintable():
            return fourcc
    return None


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = "".join(ch for ch in value[: _MAX_TEXT * 2] if ch.isprintable()).strip()
    return text[:_MAX_TEXT] or None


@dataclass(frozen=True, slots=True)
class Disagreement:
    """onMetaData claims one thing and the stream shows another."""

    field: str  # "width", "height", "framerate" or "videodatarate"
    claimed: float
    measured: float


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    """Everything measured about one stream at `taken_at`; times are wall-clock seconds."""

    started_at: float
    taken_at: float
    last_update: float | None  # `now` of the latest sample; None before the first
    # Bitrates (kbit/s) over 1, 5 and 30 s windows; None until the window fills.
    bitrate_1s: Bitrate | None
    bitrate_5s: Bitrate | None
    bitrate_30s: Bitrate | None
    # Frames per second from video timestamps: over 5 s, and the lowest and highest
    # ~1 s figure within the last 30 s (None until 30 s of slices exist).
    fps: float | None
    fps_min_30s: float | None
    fps_max_30s: float | None
    # Seconds between keyframes: the latest interval, the session maximum, and how
    # much video has arrived since the last keyframe (an overdue keyframe shows here
    # before its interval can be measured).
    keyframe_interval: float | None
    keyframe_interval_max: float | None
    since_keyframe: float | None
    video: VideoConfig | None  # from the sequence start: what the stream really is
    audio: AudioConfig | None
    metadata: MetadataClaims | None  # what onMetaData says it is
    disagreements: tuple[Disagreement, ...]
    drift: float | None  # seconds the media clock lags wall time since the start
    drift_rate: float | None  # drift growth over the last 30 s, seconds per minute
    timestamp_regressions: int
    timestamp_jumps: int
    recent_timestamp_errors: int  # regressions + jumps within the last 30 s
    video_bytes: int
    audio_bytes: int
    video_frames: int
    audio_frames: int
    keyframes: int
    avg_video_kbps: float | None  # since the start
    avg_total_kbps: float | None
    peak_total_kbps_5s: float | None
    media_age: float  # seconds since any media byte arrived (or since the start)
    video_age: float  # seconds since the last video frame (or since the start)
    audio_age: float

    def as_dict(self) -> dict[str, Any]:
        """What dataclasses.asdict gives (tuples as lists): ready for json.dumps.

        Written out, not walked: every live stream is converted once a second, and a
        generic walk over the nested dataclasses was most of a stream's monitoring
        cost. The configs, which change about once a session, are converted once.
        """
        plain = {name: getattr(self, name) for name in _SNAPSHOT_FIELDS}
        for name in _BITRATES:
            rate = plain[name]
            if rate is not None:
                plain[name] = {"video": rate.video, "audio": rate.audio, "total": rate.total}
        for name in _CONFIGS:
            config = plain[name]
            if config is not None:
                plain[name] = dict(_config_dict(config))  # a copy: the cached one stays clean
        plain["disagreements"] = [
            {"field": d.field, "claimed": d.claimed, "measured": d.measured}
            for d in self.disagreements
        ]
        return plain


_SNAPSHOT_FIELDS = field_names(StreamSnapshot)
_BITRATES = ("bitrate_1s", "bitrate_5s", "bitrate_30s")
_CONFIGS = ("video", "audio", "metadata")


@functools.lru_cache(maxsize=1024)
def _config_dict(config: VideoConfig | AudioConfig | MetadataClaims) -> dict[str, Any]:
    """A config's fields (scalars only), per distinct config."""
    return {name: getattr(config, name) for name in field_names(type(config))}


class StreamMeter:
    """Sliding-window measurements of one publish, fed counter samples."""

    __slots__ = (
        "_audio",
        "_audio_changed_at",
        "_claims",
        "_kf_last",
        "_kf_max",
        "_last",
        "_media_changed_at",
        "_media_offset_ms",
        "_peak_total",
        "_restarted",
        "_samples",
        "_slice_start",
        "_slices",
        "_times",
        "_video",
        "_video_changed_at",
        "started_at",
    )

    def __init__(self, *, started_at: float) -> None:
        self.started_at = started_at
        self._video: VideoConfig | None = None
        self._audio: AudioConfig | None = None
        self._claims: MetadataClaims | None = None
        self._kf_max: float | None = None
        self._peak_total: float | None = None
        self._restarted = False
        self._restart(started_at)

    def _restart(self, now: float) -> None:
        """Forget the samples (new counters); configs, metadata and session maxima stay."""
        self._times: list[float] = []
        self._samples: list[_Sample] = []
        self._last: _Sample | None = None
        self._kf_last: float | None = None
        self._slices: deque[tuple[float, float, float]] = deque(maxlen=_MAX_SLICES)
        self._slice_start: _Sample | None = None
        self._video_changed_at = self._audio_changed_at = self._media_changed_at = now
        self._media_offset_ms: float | None = None

    # Inputs ---------------------------------------------------------------------------

    def video_config(self, config: VideoConfig | None) -> None:
        """The latest video sequence start, described (None: not describable)."""
        self._video = config

    def audio_config(self, config: AudioConfig | None) -> None:
        self._audio = config

    def metadata(self, values: Mapping[str, Any]) -> None:
        """The stream's onMetaData (@setDataFrame) object; replaces earlier claims."""
        self._claims = MetadataClaims.parse(values)

    def sample(self, now: float, counters: MediaCounters) -> None:
        """Record the counters at `now`; call about once a second. Constant work."""
        last = self._last
        if last is not None and now <= last.t:
            return  # a duplicate or a clock step back: nothing to measure over
        c = counters
        if last is not None and (
            c.video_bytes < last.video_bytes
            or c.audio_bytes < last.audio_bytes
            or c.video_frames < last.video_frames
            or c.audio_frames < last.audio_frames
        ):
            self._restart(now)  # counters went backwards: someone passed a new object
            self._restarted = True  # and their clock restarted too
            last = None
        regressions, jumps = c.timestamp_regressions, c.timestamp_jumps
        media_ms = max(c.last_video_ts, c.last_audio_ts)
        drift = self._drift(now, media_ms, regressions + jumps, last)
        sample = _Sample(
            now,
            c.video_bytes,
            c.audio_bytes,
            c.video_frames,
            c.audio_frames,
            c.keyframes,
            c.last_video_ts,
            c.last_audio_ts,
            c.last_keyframe_ts,
            regressions,
            jumps,
            drift,
        )
        if last is None:
            self._first(sample)
        else:
            self._step(last, sample)
        self._store(sample)
        self._last = sample
        window = self._window(5.0)
        if window is not None:
            start, end = window
            total = _kbps(
                end.video_bytes + end.audio_bytes - start.video_bytes - start.audio_bytes,
                end.t - start.t,
            )
            if self._peak_total is None or total > self._peak_total:
                self._peak_total = total

    def _first(self, sample: _Sample) -> None:
        self._slice_start = sample
        if sample.video_frames:
            self._video_changed_at = sample.t
        if sample.audio_frames:
            self._audio_changed_at = sample.t
        if sample.video_bytes or sample.audio_bytes:
            self._media_changed_at = sample.t

    def _step(self, prev: _Sample, sample: _Sample) -> None:
        now = sample.t
        if sample.video_frames != prev.video_frames:
            self._video_changed_at = now
        if sample.audio_frames != prev.audio_frames:
            self._audio_changed_at = now
        if sample.video_bytes != prev.video_bytes or sample.audio_bytes != prev.audio_bytes:
            self._media_changed_at = now
        keyframes = sample.keyframes - prev.keyframes
        if (
            keyframes > 0
            and prev.last_keyframe_ts >= 0
            and sample.last_keyframe_ts > prev.last_keyframe_ts
            and _errors(sample) == _errors(prev)
        ):
            # One keyframe since the last sample: its distance from the previous one;
            # several: their average spacing.
            interval = (sample.last_keyframe_ts - prev.last_keyframe_ts) / keyframes / 1000
            self._kf_last = interval
            if self._kf_max is None or interval > self._kf_max:
                self._kf_max = interval
        start = self._slice_start
        if start is not None and now - start.t >= FPS_SLICE:
            fps = _fps(start, sample)
            if fps:  # a slice without frames says nothing about stability
                self._slices.append((start.t, now, fps))
            self._slice_start = sample

    def _drift(self, now: float, media_ms: int, errors: int, last: _Sample | None) -> float | None:
        if media_ms < 0:
            return None
        wall_ms = (now - self.started_at) * 1000
        if self._media_offset_ms is None:
            # Publishers start their clock at 0; one that is far ahead of the wall
            # clock started elsewhere, and is taken to be on time now (as are new
            # counters replacing old ones mid-session).
            on_time = self._restarted or media_ms > wall_ms + TIMESTAMP_JUMP_MS
            self._media_offset_ms = wall_ms - media_ms if on_time else 0.0
        elif last is not None and errors != _errors(last):
            # A discontinuity: assume media time advanced with the wall clock since
            # the previous sample, which keeps drift continuous.
            previous = max(last.last_video_ts, last.last_audio_ts) + self._media_offset_ms
            self._media_offset_ms = previous + (now - last.t) * 1000 - media_ms
        return (wall_ms - media_ms - self._media_offset_ms) / 1000

    def _store(self, sample: _Sample) -> None:
        times, samples = self._times, self._samples
        if len(times) >= 2 and times[-1] - times[-2] < MIN_SPACING:
            times[-1], samples[-1] = sample.t, sample  # coalesce a too-close head
            return
        times.append(sample.t)
        samples.append(sample)
        if len(times) > 2 * _TRIM_BATCH:
            # Keep one sample at or before the horizon, so a full window has a start.
            cut = bisect_right(times, sample.t - HORIZON) - 1
            if cut >= _TRIM_BATCH:
                del times[:cut], samples[:cut]

    # Views ----------------------------------------------------------------------------

    def _window(self, seconds: float) -> tuple[_Sample, _Sample] | None:
        """(start, end) of the window ending at the latest sample, or None if not filled."""
        times = self._times
        end = len(times) - 1
        if end < 1:
            return None
        target = times[end] - seconds
        least = seconds * MIN_FILL
        before = bisect_right(times, target, 0, end) - 1  # newest at or before target
        after = before + 1  # newest after target: a shorter span, maybe closer to W
        best = after
        if before >= 0 and (
            after == end
            or times[end] - times[after] < least
            or target - times[before] <= times[after] - target
        ):
            best = before
        if best == end or times[end] - times[best] < least:
            return None
        return self._samples[best], self._samples[end]

    def _bitrate(self, seconds: float) -> Bitrate | None:
        window = self._window(seconds)
        if window is None:
            return None
        start, end = window
        span = end.t - start.t
        video = _kbps(end.video_bytes - start.video_bytes, span)
        audio = _kbps(end.audio_bytes - start.audio_bytes, span)
        return Bitrate(video, audio, video + audio)

    def _fps_range(self, end: float) -> tuple[float | None, float | None]:
        """Lowest and highest ~1 s frame rate over the last 30 s, once 30 s are covered."""
        since = end - STABILITY_WINDOW
        recent = [(start, fps) for start, stop, fps in self._slices if stop > since]
        if not recent or end - max(recent[0][0], since) < STABILITY_WINDOW * MIN_FILL:
            return None, None
        rates = [fps for _, fps in recent]
        return min(rates), max(rates)

    def _disagreements(
        self, fps: float | None, bitrate: Bitrate | None
    ) -> tuple[Disagreement, ...]:
        claims, video = self._claims, self._video
        if claims is None:
            return ()
        found: list[Disagreement] = []
        if video is not None:
            for name, claimed, size in (
                ("width", claims.width, video.width),
                ("height", claims.height, video.height),
            ):
                if claimed is not None and size is not None and claimed != size:
                    found.append(Disagreement(name, claimed, size))
        rate, kbps = claims.framerate, claims.video_kbps
        if rate is not None and fps and _off(rate, fps, FRAMERATE_TOLERANCE):
            found.append(Disagreement("framerate", rate, fps))
        if (
            kbps is not None
            and bitrate is not None
            and _off(kbps, bitrate.video, DATARATE_TOLERANCE)
        ):
            found.append(Disagreement("videodatarate", kbps, bitrate.video))
        return tuple(found)

    def snapshot(self, now: float) -> StreamSnapshot:
        """Everything measured so far; `now` only ages the `*_age` fields."""
        latest = self._last
        bitrates = [self._bitrate(seconds) for seconds in (1.0, 5.0, 30.0)]
        fps: float | None = None
        window = self._window(FPS_WINDOW)
        if window is not None:
            start, end = window
            fps = _fps(start, end)
            if fps is None and end.video_frames and end.video_frames == start.video_frames:
                fps = 0.0  # video stopped: no frames in the whole window
        fps_min = fps_max = since_keyframe = drift_rate = None
        avg_video = avg_total = None
        recent_errors = 0
        if latest is not None:
            fps_min, fps_max = self._fps_range(latest.t)
            if latest.last_keyframe_ts >= 0 and latest.last_video_ts >= latest.last_keyframe_ts:
                since_keyframe = (latest.last_video_ts - latest.last_keyframe_ts) / 1000
            drift_window = self._window(STABILITY_WINDOW)
            if drift_window is not None:
                start, end = drift_window
                if start.drift is not None and end.drift is not None:
                    drift_rate = (end.drift - start.drift) / (end.t - start.t) * 60
            # Errors since the sample at or before 30 s ago; all of them if younger.
            base = bisect_right(self._times, latest.t - STABILITY_WINDOW) - 1
            recent_errors = _errors(latest) - (_errors(self._samples[base]) if base >= 0 else 0)
            elapsed = latest.t - self.started_at
            if elapsed >= 1.0:
                avg_video = _kbps(latest.video_bytes, elapsed)
                avg_total = _kbps(latest.video_bytes + latest.audio_bytes, elapsed)
        return StreamSnapshot(
            started_at=self.started_at,
            taken_at=now,
            last_update=latest.t if latest else None,
            bitrate_1s=bitrates[0],
            bitrate_5s=bitrates[1],
            bitrate_30s=bitrates[2],
            fps=fps,
            fps_min_30s=fps_min,
            fps_max_30s=fps_max,
            keyframe_interval=self._kf_last,
            keyframe_interval_max=self._kf_max,
            since_keyframe=since_keyframe,
            video=self._video,
            audio=self._audio,
            metadata=self._claims,
            disagreements=self._disagreements(fps, bitrates[2]),
            drift=latest.drift if latest else None,
            drift_rate=drift_rate,
            timestamp_regressions=latest.regressions if latest else 0,
            timestamp_jumps=latest.jumps if latest else 0,
            recent_timestamp_errors=recent_errors,
            video_bytes=latest.video_bytes if latest else 0,
            audio_bytes=latest.audio_bytes if latest else 0,
            video_frames=latest.video_frames if latest else 0,
            audio_frames=latest.audio_frames if latest else 0,
            keyframes=latest.keyframes if latest else 0,
            avg_video_kbps=avg_video,
            avg_total_kbps=avg_total,
            peak_total_kbps_5s=self._peak_total,
            media_age=max(0.0, now - self._media_changed_at),
            video_age=max(0.0, now - self._video_changed_at),
            audio_age=max(0.0, now - self._audio_changed_at),
        )


def _off(claimed: float, measured: float, tolerance: float) -> bool:
    return abs(claimed - measured) > tolerance * claimed


def _kbps(size: int, seconds: float) -> float:
    return size * 8 / 1000 / seconds


def _errors(sample: _Sample) -> int:
    return sample.regressions + sample.jumps


def _fps(start: _Sample, end: _Sample) -> float | None:
    """Frames per second of encoder time between two samples, if measurable."""
    frames = end.video_frames - start.video_frames
    span = end.last_video_ts - start.last_video_ts
    if frames <= 0 or span <= 0 or start.last_video_ts < 0 or _errors(start) != _errors(end):
        return None
    return frames * 1000 / span
