"""FLV audio/video tag headers: legacy codec ids and Enhanced RTMP (v2).

Two levels of detail. `classify_video`/`classify_audio` look at the first two
payload bytes and say what the hot path must do with a message: count it as a
frame, or collect it whole because it is rare and interesting (a sequence header,
metadata, multitrack, ModEx). `parse_video`/`parse_audio` read a collected message
completely, including every track of a multitrack message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from .errors import ProtocolError

# What the hot path does with a media message.
IGNORE = 0  # counted in bytes only (command frames, sequence ends without details)
FRAME = 1
KEYFRAME = 2
COLLECT = 3  # assemble it and hand it to parse_video/parse_audio


class VideoPacketType(IntEnum):
    SEQUENCE_START = 0
    CODED_FRAMES = 1
    SEQUENCE_END = 2
    CODED_FRAMES_X = 3
    METADATA = 4
    MPEG2TS_SEQUENCE_START = 5
    MULTITRACK = 6
    MOD_EX = 7


class AudioPacketType(IntEnum):
    SEQUENCE_START = 0
    CODED_FRAMES = 1
    SEQUENCE_END = 2
    MULTICHANNEL_CONFIG = 4
    MULTITRACK = 5
    MOD_EX = 7


class MultitrackType(IntEnum):
    ONE_TRACK = 0
    MANY_TRACKS = 1
    MANY_TRACKS_MANY_CODECS = 2


class FrameType(IntEnum):
    KEY = 1
    INTER = 2
    DISPOSABLE_INTER = 3
    GENERATED_KEY = 4
    COMMAND = 5


class PacketKind(StrEnum):
    """What a media packet carries, in one vocabulary for legacy and enhanced tags."""

    SEQUENCE_START = "sequence_start"
    CODED_FRAMES = "coded_frames"
    SEQUENCE_END = "sequence_end"
    METADATA = "metadata"
    MULTICHANNEL_CONFIG = "multichannel_config"
    COMMAND = "command"


EX_AUDIO_FORMAT = 9
LEGACY_AAC = 10
LEGACY_AVC = 7

# Legacy codec ids, named by the FourCC that Enhanced RTMP uses for the same codec
# (or a descriptive tag where E-RTMP has none). Id 12 is the widespread
# non-standard "HEVC in legacy FLV" extension.
LEGACY_VIDEO_CODECS = {
    2: "h263",
    3: "scr1",
    4: "vp6f",
    5: "vp6a",
    6: "scr2",
    7: "avc1",
    12: "hvc1",
}
LEGACY_AUDIO_CODECS = {
    0: "lpcm",
    1: "adpcm",
    2: ".mp3",
    3: "lpcm",
    4: "nelly",
    5: "nelly",
    6: "nelly",
    7: "alaw",
    8: "ulaw",
    10: "mp4a",
    11: "speex",
    14: ".mp3",
}
# Legacy AVC-style codecs whose second byte is a packet type (0 = sequence header).
_PACKETIZED_LEGACY_VIDEO = frozenset((7, 12))
# E-RTMP codecs whose CodedFrames carry a 24-bit composition time offset.
_FOURCC_WITH_CTS = frozenset(("avc1", "hvc1", "vvc1"))


def classify_video(b0: int, b1: int) -> int:
    """Hot-path decision for a video message from its first two bytes (b1=-1 if absent)."""
    if b0 & 0x80:
        packet_type = b0 & 0x0F
        frame_type = (b0 >> 4) & 0x07
        if packet_type in (VideoPacketType.CODED_FRAMES, VideoPacketType.CODED_FRAMES_X):
            if frame_type == FrameType.COMMAND:
                return IGNORE
            return KEYFRAME if frame_type == FrameType.KEY else FRAME
        return COLLECT
    frame_type = b0 >> 4
    if frame_type == FrameType.COMMAND:
        return IGNORE
    if (b0 & 0x0F) in _PACKETIZED_LEGACY_VIDEO:
        if b1 == 1:
            return KEYFRAME if frame_type == FrameType.KEY else FRAME
        return COLLECT  # 0 = sequence header, 2 = end of sequence
    return KEYFRAME if frame_type == FrameType.KEY else FRAME


def classify_audio(b0: int, b1: int) -> int:
    """Hot-path decision for an audio message from its first two bytes (b1=-1 if absent)."""
    sound_format = b0 >> 4
    if sound_format == LEGACY_AAC:
        return FRAME if b1 == 1 else COLLECT
    if sound_format == EX_AUDIO_FORMAT:
        return FRAME if (b0 & 0x0F) == AudioPacketType.CODED_FRAMES else COLLECT
    return FRAME


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One track's part of a media message."""

    codec: str  # FourCC, e.g. "avc1", "hvc1", "mp4a", "Opus"
    kind: PacketKind
    track: int = 0
    keyframe: bool = False
    composition_time: int = 0
    body: bytes = field(default=b"", repr=False)
    # Legacy audio only: the flags byte's claims (often wrong; the config record wins).
    legacy_sound_rate: int | None = None
    legacy_sound_stereo: bool | None = None


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise ProtocolError(f"FLV tag truncated in {what}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u24(self, what: str) -> int:
        return int.from_bytes(self.take(3, what), "big")

    def fourcc(self) -> str:
        return self.take(4, "FourCC").decode("latin-1")

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk


def _si24(value: int) -> int:
    return value - 0x1000000 if value & 0x800000 else value


def _skip_mod_ex(reader: _Reader) -> int:
    """Skip ModEx extensions (e.g. nanosecond timestamp offsets); return the real packet type."""
    while True:
        size = reader.u8("ModEx size") + 1
        if size == 256:
            size = int.from_bytes(reader.take(2, "ModEx size"), "big") + 1
        reader.take(size, "ModEx data")
        packet_type = reader.u8("ModEx type") & 0x0F
        if packet_type != VideoPacketType.MOD_EX:  # same value (7) for audio and video
            return packet_type


def _tracks(
    reader: _Reader, multitrack_type: int | None, fourcc: str
) -> list[tuple[str, int, bytes]]:
    """Split a (possibly multitrack) body into (fourcc, track id, track body)."""
    if multitrack_type is None:
        return [(fourcc, 0, reader.rest())]
    tracks: list[tuple[str, int, bytes]] = []
    while reader.pos < len(reader.data):
        if multitrack_type == MultitrackType.MANY_TRACKS_MANY_CODECS:
            fourcc = reader.fourcc()
        track = reader.u8("track id")
        if multitrack_type == MultitrackType.ONE_TRACK:
            tracks.append((fourcc, track, reader.rest()))
            break
        size = reader.u24("track size")
        tracks.append((fourcc, track, reader.take(size, "track body")))
    return tracks


_VIDEO_KINDS: dict[int, PacketKind] = {
    VideoPacketType.SEQUENCE_START: PacketKind.SEQUENCE_START,
    VideoPacketType.MPEG2TS_SEQUENCE_START: PacketKind.SEQUENCE_START,
    VideoPacketType.CODED_FRAMES: PacketKind.CODED_FRAMES,
    VideoPacketType.CODED_FRAMES_X: PacketKind.CODED_FRAMES,
    VideoPacketType.SEQUENCE_END: PacketKind.SEQUENCE_END,
    VideoPacketType.METADATA: PacketKind.METADATA,
}


def parse_video(payload: bytes) -> list[MediaPacket]:
    """Parse a whole video message into one packet per track."""
    reader = _Reader(payload)
    b0 = reader.u8("video header")
    if not b0 & 0x80:
        return [_parse_legacy_video(b0, reader)]
    frame_type = (b0 >> 4) & 0x07
    packet_type = b0 & 0x0F
    if packet_type == VideoPacketType.MOD_EX:
        packet_type = _skip_mod_ex(reader)
    if frame_type == FrameType.COMMAND and packet_type != VideoPacketType.METADATA:
        reader.u8("video command")
        return [MediaPacket("", PacketKind.COMMAND)]
    multitrack_type: int | None = None
    fourcc = ""
    if packet_type == VideoPacketType.MULTITRACK:
        byte = reader.u8("multitrack header")
        multitrack_type, packet_type = byte >> 4, byte & 0x0F
        if multitrack_type > MultitrackType.MANY_TRACKS_MANY_CODECS:
            raise ProtocolError(f"unknown video multitrack type {multitrack_type}")
        if multitrack_type != MultitrackType.MANY_TRACKS_MANY_CODECS:
            fourcc = reader.fourcc()
    else:
        fourcc = reader.fourcc()
    kind = _VIDEO_KINDS.get(packet_type)
    if kind is None:
        raise ProtocolError(f"unknown enhanced video packet type {packet_type}")
    packets = []
    for track_fourcc, track, track_body in _tracks(reader, multitrack_type, fourcc):
        cts, body = 0, track_body
        if packet_type == VideoPacketType.CODED_FRAMES and track_fourcc in _FOURCC_WITH_CTS:
            if len(body) < 3:
                raise ProtocolError("FLV tag truncated in composition time")
            cts, body = _si24(int.from_bytes(body[:3], "big")), body[3:]
        keyframe = kind is PacketKind.CODED_FRAMES and frame_type == FrameType.KEY
        packets.append(MediaPacket(track_fourcc, kind, track, keyframe, cts, body))
    return packets


def _parse_legacy_video(b0: int, reader: _Reader) -> MediaPacket:
    frame_type, codec_id = b0 >> 4, b0 & 0x0F
    codec = LEGACY_VIDEO_CODECS.get(codec_id, f"codec{codec_id}")
    if frame_type == FrameType.COMMAND:
        return MediaPacket(codec, PacketKind.COMMAND)
    if codec_id not in _PACKETIZED_LEGACY_VIDEO:
        return MediaPacket(codec, PacketKind.CODED_FRAMES, 0, frame_type == 1, 0, reader.rest())
    packet_type = reader.u8("AVC packet type")
    cts = _si24(reader.u24("composition time"))
    body = reader.rest()
    if packet_type == 0:
        return MediaPacket(codec, PacketKind.SEQUENCE_START, 0, False, 0, body)
    if packet_type == 1:
        return MediaPacket(codec, PacketKind.CODED_FRAMES, 0, frame_type == 1, cts, body)
    if packet_type == 2:
        return MediaPacket(codec, PacketKind.SEQUENCE_END)
    raise ProtocolError(f"unknown AVC packet type {packet_type}")


_AUDIO_KINDS: dict[int, PacketKind] = {
    AudioPacketType.SEQUENCE_START: PacketKind.SEQUENCE_START,
    AudioPacketType.CODED_FRAMES: PacketKind.CODED_FRAMES,
    AudioPacketType.SEQUENCE_END: PacketKind.SEQUENCE_END,
    AudioPacketType.MULTICHANNEL_CONFIG: PacketKind.MULTICHANNEL_CONFIG,
}
_LEGACY_RATES = (5512, 11025, 22050, 44100)


def parse_audio(payload: bytes) -> list[MediaPacket]:
    """Parse a whole audio message into one packet per track."""
    reader = _Reader(payload)
    b0 = reader.u8("audio header")
    sound_format = b0 >> 4
    if sound_format != EX_AUDIO_FORMAT:
        codec = LEGACY_AUDIO_CODECS.get(sound_format, f"codec{sound_format}")
        rate, stereo = _LEGACY_RATES[(b0 >> 2) & 3], bool(b0 & 1)
        kind = PacketKind.CODED_FRAMES
        if sound_format == LEGACY_AAC:
            kind = PacketKind.SEQUENCE_START if reader.u8("AAC packet type") == 0 else kind
        return [MediaPacket(codec, kind, 0, False, 0, reader.rest(), rate, stereo)]
    packet_type = b0 & 0x0F
    if packet_type == AudioPacketType.MOD_EX:
        packet_type = _skip_mod_ex(reader)
    multitrack_type: int | None = None
    fourcc = ""
    if packet_type == AudioPacketType.MULTITRACK:
        byte = reader.u8("multitrack header")
        multitrack_type, packet_type = byte >> 4, byte & 0x0F
        if multitrack_type > MultitrackType.MANY_TRACKS_MANY_CODECS:
            raise ProtocolError(f"unknown audio multitrack type {multitrack_type}")
        if multitrack_type != MultitrackType.MANY_TRACKS_MANY_CODECS:
            fourcc = reader.fourcc()
    else:
        fourcc = reader.fourcc()
    audio_kind = _AUDIO_KINDS.get(packet_type)
    if audio_kind is None:
        raise ProtocolError(f"unknown enhanced audio packet type {packet_type}")
    return [
        MediaPacket(track_fourcc, audio_kind, track, False, 0, body)
        for track_fourcc, track, body in _tracks(reader, multitrack_type, fourcc)
    ]


def parse_multichannel_config(body: bytes) -> tuple[int, int]:
    """(channel order, channel count) from an E-RTMP MultichannelConfig body."""
    if len(body) < 2:
        raise ProtocolError("FLV tag truncated in multichannel config")
    return body[0], body[1]
