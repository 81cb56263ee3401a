"""Per-publish media counters: the only per-message work on the hot path.

The chunk reader bumps these integers as media messages start; everything else
(bitrate windows, frame rate, keyframe interval) is derived by whoever samples them,
typically once a second. Timestamps are RTMP milliseconds; -1 means "none yet".
Frame and timestamp fields describe the default track (track 0): a multitrack
stream's other tracks count only in the byte totals.
"""

from __future__ import annotations

# A forward step between two frames of one kind larger than this is a timestamp jump
# (an encoder that restarted its clock), not a slow frame rate.
TIMESTAMP_JUMP_MS = 5000


FIELDS = (
    "audio_bytes",
    "audio_frames",
    "audio_messages",
    "ignored_messages",
    "keyframes",
    "last_audio_ts",
    "last_keyframe_ts",
    "last_video_ts",
    "malformed_messages",
    "timestamp_jumps",
    "timestamp_regressions",
    "video_bytes",
    "video_frames",
    "video_messages",
)


class MediaCounters:
    __slots__ = FIELDS  # a name, not a literal: compiled (mypyc) classes have no __slots__

    def __init__(self) -> None:
        self.video_messages = 0
        self.video_bytes = 0
        self.video_frames = 0
        self.keyframes = 0
        self.last_video_ts = -1
        self.last_keyframe_ts = -1
        self.audio_messages = 0
        self.audio_bytes = 0
        self.audio_frames = 0
        self.last_audio_ts = -1
        self.timestamp_regressions = 0
        self.timestamp_jumps = 0
        self.ignored_messages = 0  # media on a stream that is not publishing
        self.malformed_messages = 0  # media whose tag header did not parse

    @property
    def media_bytes(self) -> int:
        return self.video_bytes + self.audio_bytes

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIELDS}

    def count_video_frame(self, timestamp: int, keyframe: bool) -> None:
        """The slow-path twin of the reader's inline fast path (enhanced and multitrack)."""
        self.video_frames += 1
        self._step(timestamp, self.last_video_ts)
        self.last_video_ts = timestamp
        if keyframe:
            self.keyframes += 1
            self.last_keyframe_ts = timestamp

    def count_audio_frame(self, timestamp: int) -> None:
        self.audio_frames += 1
        self._step(timestamp, self.last_audio_ts)
        self.last_audio_ts = timestamp

    def _step(self, timestamp: int, last: int) -> None:
        if timestamp < last:
            self.timestamp_regressions += 1
        elif timestamp > last + TIMESTAMP_JUMP_MS and last >= 0:
            self.timestamp_jumps += 1
