"""Codec configuration records: real captures, encoder output and hand-built edge cases.

The encoder vectors were produced with the FFmpeg 9.0.2 build from imageio-ffmpeg
(x264, x265, SVT-AV1, libvpx, libopus, FLAC and the native AAC encoder) and their
descriptions checked against what FFmpeg itself reports for the same files.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_sync.rtmp import events as ev
from stream_sync.rtmp import flv
from stream_sync.rtmp.codecs import (
    AudioConfig,
    CodecError,
    VideoConfig,
    _BitReader,
    _unescape,
    describe_audio,
    describe_video,
)
from stream_sync.rtmp.config import RtmpConfig
from stream_sync.rtmp.connection import ServerConnection

CAPTURES = Path(__file__).parents[2] / "data" / "captures"


# Helpers ----------------------------------------------------------------------------


def replay_sequence_starts(name: str) -> list[ev.CodecConfigured]:
    """Play a client capture into the server core, accepting every decision.

    Fed in small pieces because the core pauses at each decision and only buffers
    a limited backlog meanwhile.
    """
    conn = ServerConnection(RtmpConfig(), now=0.0)
    data = (CAPTURES / f"{name}.c2s.bin").read_bytes()
    found: list[ev.CodecConfigured] = []
    for offset in range(0, len(data), 4096):
        pending = list(conn.receive_data(data[offset : offset + 4096], 0.0))
        while pending:
            event = pending.pop(0)
            if isinstance(event, ev.ConnectRequested):
                pending += conn.accept_connect()
            elif isinstance(event, ev.PublishRequested):
                pending += conn.accept_publish(event.stream_id)
            elif isinstance(event, ev.CodecConfigured):
                found.append(event)
    return [e for e in found if e.packet.kind is flv.PacketKind.SEQUENCE_START]


def describe(event: ev.CodecConfigured) -> VideoConfig | AudioConfig:
    packet = event.packet
    if event.media == "video":
        return describe_video(packet.codec, packet.body)
    return describe_audio(packet.codec, packet.body)


@dataclass
class Bits:
    """MSB-first bit writer for building records by hand."""

    bits: list[str] = field(default_factory=list)

    def u(self, n: int, value: int) -> Bits:
        assert 0 <= value < 1 << n or n == 0 == value
        if n:
            self.bits.append(format(value, f"0{n}b"))
        return self

    def flag(self, value: bool) -> Bits:
        return self.u(1, int(value))

    def ue(self, value: int) -> Bits:
        code = value + 1
        return self.u(code.bit_length() - 1, 0).u(code.bit_length(), code)

    def se(self, value: int) -> Bits:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def raw(self, data: bytes) -> Bits:
        for byte in data:
            self.u(8, byte)
        return self

    def to_bytes(self) -> bytes:
        text = "".join(self.bits)
        assert len(text) % 8 == 0, "not byte aligned"
        return int(text, 2).to_bytes(len(text) // 8, "big") if text else b""

    def rbsp(self) -> bytes:
        """Close with rbsp_trailing_bits: a stop bit, then zeros to the byte boundary."""
        self.u(1, 1)
        self.u(-len("".join(self.bits)) % 8, 0)
        return self.to_bytes()


def escape(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes, as an encoder does."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def avc_sps(
    *,
    profile: int = 100,
    constraints: int = 0,
    level: int = 40,
    chroma_format_idc: int = 1,
    separate_planes: bool = False,
    bit_depth: int = 8,
    scaling_lists: list[list[int] | None] | None = None,
    poc_type: int = 0,
    poc_cycle: tuple[int, ...] = (),
    width_mbs: int = 120,
    height_map_units: int = 68,
    frame_mbs_only: bool = True,
    crop: tuple[int, int, int, int] | None = None,
    log2_max_frame_num_minus4: int = 0,
    log2_max_poc_lsb_minus4: int = 2,
    max_num_ref_frames: int = 1,
) -> bytes:
    """An H.264 SPS NAL unit (header byte 0x67), escaped, without VUI.

    scaling_lists holds, per list, None (not present) or the delta_scale values to
    write; the caller makes them consistent with the list size.
    """
    bits = Bits().u(8, profile).u(8, constraints).u(8, level).ue(0)
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        bits.ue(chroma_format_idc)
        if chroma_format_idc == 3:
            bits.flag(separate_planes)
        bits.ue(bit_depth - 8).ue(bit_depth - 8).flag(False)
        bits.flag(scaling_lists is not None)
        for deltas in scaling_lists or []:
            bits.flag(deltas is not None)
            for delta in deltas or []:
                bits.se(delta)
    bits.ue(log2_max_frame_num_minus4).ue(poc_type)
    if poc_type == 0:
        bits.ue(log2_max_poc_lsb_minus4)
    elif poc_type == 1:
        bits.flag(False).se(-1).se(2).ue(len(poc_cycle))
        for offset in poc_cycle:
            bits.se(offset)
    bits.ue(max_num_ref_frames).flag(False)
    bits.ue(width_mbs - 1).ue(height_map_units - 1).flag(frame_mbs_only)
    if not frame_mbs_only:
        bits.flag(False)  # mb_adaptive_frame_field_flag
    bits.flag(True)  # direct_8x8_inference_flag
    bits.flag(crop is not None)
    for offset in crop or ():
        bits.ue(offset)
    bits.flag(False)  # vui_parameters_present_flag
    return b"\x67" + escape(bits.rbsp())


def avcc(*sps: bytes, pps: bytes = b"\x68\xce\x3c\x80") -> bytes:
    first = sps[0] if sps else b"\x67\x64\x00\x28"
    record = bytes((1, first[1], first[2], first[3], 0xFF, 0xE0 | len(sps)))
    for nal in sps:
        record += len(nal).to_bytes(2, "big") + nal
    return record + b"\x01" + len(pps).to_bytes(2, "big") + pps


def hevc_sps(
    *,
    profile: int = 1,
    level: int = 93,
    sub_layers: tuple[tuple[bool, bool], ...] = (),
    chroma_format_idc: int = 1,
    separate_planes: bool = False,
    width: int = 1920,
    height: int = 1088,
    window: tuple[int, int, int, int] | None = (0, 0, 0, 4),
    bit_depth: int = 8,
    layer_id: int = 0,
) -> bytes:
    """An HEVC SPS NAL unit up to the bit depths (a parser of those fields stops there)."""
    bits = Bits().u(4, 0).u(3, len(sub_layers)).flag(True)
    bits.u(2, 0).u(1, 0).u(5, profile).u(32, 0x60000000).u(48, 0x900000000000).u(8, level)
    for profile_present, level_present in sub_layers:
        bits.flag(profile_present).flag(level_present)
    if sub_layers:
        bits.u(2 * (8 - len(sub_layers)), 0)
    for profile_present, level_present in sub_layers:
        if profile_present:
            bits.u(88, (1 << 88) - 1)  # all ones: would be misread as anything else
        if level_present:
            bits.u(8, 0xFF)
    bits.ue(0).ue(chroma_format_idc)
    if chroma_format_idc == 3:
        bits.flag(separate_planes)
    bits.ue(width).ue(height).flag(window is not None)
    for offset in window or ():
        bits.ue(offset)
    bits.ue(bit_depth - 8).ue(bit_depth - 8)
    header = (_HEVC_SPS_TYPE << 9 | layer_id << 3 | 1).to_bytes(2, "big")
    return header + escape(bits.rbsp())


_HEVC_SPS_TYPE = 33


def hvcc(
    *arrays: tuple[int, list[bytes]],
    profile: int = 1,
    compatibility: int = 0x60000000,
    level: int = 93,
    chroma_format_idc: int = 1,
    bit_depth: int = 8,
) -> bytes:
    bits = Bits().u(8, 1).u(3, 0).u(5, profile).u(32, compatibility).u(48, 0).u(8, level)
    bits.u(4, 0xF).u(12, 0).u(6, 0x3F).u(2, 0).u(6, 0x3F).u(2, chroma_format_idc)
    bits.u(5, 0x1F).u(3, bit_depth - 8).u(5, 0x1F).u(3, bit_depth - 8)
    bits.u(16, 0).u(2, 0).u(3, 1).u(1, 1).u(2, 3).u(8, len(arrays))
    for nal_type, nals in arrays:
        bits.u(1, 1).u(1, 0).u(6, nal_type).u(16, len(nals))
        for nal in nals:
            bits.u(16, len(nal)).raw(nal)
    return bits.to_bytes()


def av1_sequence_header(
    *,
    profile: int = 0,
    reduced: bool = False,
    timing: bool = False,
    decoder_model: bool = False,
    display_delay: bool = False,
    levels: tuple[int, ...] = (8,),
    width: int = 1920,
    height: int = 1080,
) -> bytes:
    """An AV1 sequence_header_obu payload up to max_frame_height_minus_1."""
    bits = Bits().u(3, profile).flag(False).flag(reduced)
    if reduced:
        bits.u(5, levels[0])
    else:
        bits.flag(timing)
        if timing:
            bits.u(32, 1).u(32, 25).flag(True).ue(24)  # uvlc codes like ue(v)
            bits.flag(decoder_model)
            if decoder_model:
                bits.u(5, 9).u(32, 1).u(5, 31).u(5, 31)  # 10-bit buffer delays
        bits.flag(display_delay).u(5, len(levels) - 1)
        for level in levels:
            bits.u(12, 0x7FF).u(5, level)
            if level > 7:
                bits.flag(True)  # seq_tier
            if decoder_model:
                bits.flag(True).u(10, 0x3FF).u(10, 0x3FF).flag(True)
            if display_delay:
                bits.flag(True).u(4, 0xF)
    width_bits, height_bits = (width - 1).bit_length(), (height - 1).bit_length()
    bits.u(4, width_bits - 1).u(4, height_bits - 1)
    bits.u(width_bits, width - 1).u(height_bits, height - 1)
    return bits.rbsp()


def obu(obu_type: int, payload: bytes, *, sized: bool = True, extension: bool = False) -> bytes:
    header = bytes((obu_type << 3 | (4 if extension else 0) | (2 if sized else 0),))
    if extension:
        header += b"\x00"
    if not sized:
        return header + payload
    size, leb = len(payload), bytearray()
    while True:
        leb.append(size & 0x7F | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not size:
            return header + bytes(leb) + payload


def av1c(
    *,
    profile: int = 0,
    level: int = 8,
    high_bitdepth: bool = False,
    twelve_bit: bool = False,
    monochrome: bool = False,
    subsampling: tuple[int, int] = (1, 1),
    obus: bytes = b"",
) -> bytes:
    bits = Bits().u(1, 1).u(7, 1).u(3, profile).u(5, level).u(1, 0)
    bits.flag(high_bitdepth).flag(twelve_bit).flag(monochrome)
    bits.u(1, subsampling[0]).u(1, subsampling[1]).u(2, 0).u(8, 0)
    return bits.to_bytes() + obus


def asc(*fields: tuple[int, int]) -> bytes:
    """An AudioSpecificConfig from (width, value) fields, zero-padded to a byte."""
    bits = Bits()
    for width, value in fields:
        bits.u(width, value)
    bits.u(-len("".join(bits.bits)) % 8, 0)
    return bits.to_bytes()


def opus_head(channels: int = 2, family: int = 0, *, rate: int = 44100, tail: bytes = b"") -> bytes:
    head = b"OpusHead" + bytes((1, channels)) + (3840).to_bytes(2, "little")
    head += rate.to_bytes(4, "little") + b"\x00\x00" + bytes((family,))
    if family:
        head += bytes((channels, 0)) + bytes(range(channels))
    return head + tail


# Real captures -----------------------------------------------------------------------

AAC_LC = AudioConfig("mp4a", "AAC", "AAC-LC", 48000, 1)
FFMPEG_H264 = VideoConfig("avc1", "H.264", 100, "High", 1.2, 320, 240, 8, "4:2:0")
GST_H264 = VideoConfig("avc1", "H.264", 77, "Main", 1.2, 320, 240, 8, "4:2:0")
HEVC_MAIN = VideoConfig("hvc1", "HEVC", 1, "Main", 2.0, 320, 240, 8, "4:2:0")

CAPTURE_TRUTHS: dict[str, list[tuple[int, VideoConfig | AudioConfig]]] = {
    "ff51-h264-aac": [(0, FFMPEG_H264), (0, AAC_LC)],
    "ff51-h264-aac-extts": [(0, FFMPEG_H264), (0, AAC_LC)],
    "ff51-h264-aac-nochunksize": [(0, FFMPEG_H264), (0, AAC_LC)],
    "ff7-h264-aac": [(0, FFMPEG_H264), (0, AAC_LC)],
    "ff9-h264-aac": [(0, FFMPEG_H264), (0, AAC_LC)],
    "ff9-avc1enh-aac": [(0, FFMPEG_H264), (0, AAC_LC)],
    "gst-rtmpsink-h264-aac": [(0, GST_H264), (0, AAC_LC)],
    "gst-rtmp2sink-h264-aac": [(0, GST_H264), (0, AAC_LC)],
    "obs29-h264-aac": [(0, AAC_LC), (0, FFMPEG_H264)],  # OBS sends audio first
    "ff9-hevc-aac": [(0, HEVC_MAIN), (0, AAC_LC)],
    "ff9-hevc-opus": [
        (0, HEVC_MAIN),
        (0, AudioConfig("Opus", "Opus", None, 48000, 1, input_sample_rate=48000, pre_skip=312)),
    ],
    "ff9-av1-aac": [
        (0, VideoConfig("av01", "AV1", 0, "Main", 2.0, 320, 240, 8, "4:2:0")),
        (0, AAC_LC),
    ],
    "ff9-vp9-aac": [
        (0, VideoConfig("vp09", "VP9", 0, "Profile 0", 2.0, None, None, 8, "4:2:0")),
        (0, AAC_LC),
    ],
    "ff9-vvc-aac": [
        (0, VideoConfig("vvc1", "VVC", 1, "Main 10", 2.0, 320, 240, 10, "4:2:0")),
        (0, AAC_LC),
    ],
    "ff9-multitrack": [
        (0, VideoConfig("avc1", "H.264", 100, "High", 1.3, 320, 240, 8, "4:2:0")),
        (1, VideoConfig("avc1", "H.264", 100, "High", 1.1, 160, 120, 8, "4:2:0")),
        (0, AAC_LC),
        (1, AAC_LC),
    ],
}


@pytest.mark.parametrize("name", sorted(CAPTURE_TRUTHS))
def test_capture_records_describe_what_was_encoded(name: str) -> None:
    events = replay_sequence_starts(name)
    assert [(e.packet.track, describe(e)) for e in events] == CAPTURE_TRUTHS[name]


def test_the_record_overrules_the_legacy_audio_flags() -> None:
    (audio,) = [e for e in replay_sequence_starts("ff51-h264-aac") if e.media == "audio"]
    assert (audio.packet.legacy_sound_rate, audio.packet.legacy_sound_stereo) == (44100, True)
    assert describe(audio) == AAC_LC


@pytest.mark.parametrize("name", sorted(CAPTURE_TRUTHS))
def test_every_truncation_of_a_captured_record_is_described_or_refused(name: str) -> None:
    for event in replay_sequence_starts(name):
        codec, body = event.packet.codec, event.packet.body
        describe_one = describe_video if event.media == "video" else describe_audio
        for size in range(len(body)):
            with contextlib.suppress(CodecError):  # anything else fails the test
                describe_one(codec, body[:size])
        with pytest.raises(CodecError):  # not [:2]: two bytes can be a whole AudioSpecificConfig
            describe_one(codec, body[:1])


# Records from the captures, as seeds for the property tests below.
CAPTURED_VIDEO = [
    (
        "avc1",
        "0164000cffe100196764000cacd94141fb0110000003001000000301e0f142996001000468efbcb0fdf8f800",
    ),
    (
        "avc1",
        "014d400cffe1001b674d400cda0507ec05a830303528000003000800000300f478a15501000468ef3c80",
    ),
    (
        "avc1",
        "0164000cffe1001c6764000cacb40a0fd80b501010140000030004000003007a3c50aa8001000468ef3cb0",
    ),
    ("av01", "81000c000a0b0200000521e7fde017c002"),
    ("vp09", "010000000014820202020000"),
    (
        "vvc1",
        "ff00655f010220800000014000f00000028f00010076007900ab02208000008028203c46a0062fffac2136"
        "56304082700228216221032441a90f47ab525e4935259222d445e22f56a4bc97a845042c40216408110810"
        "2c8408122041a081241070832045a104908710d09723950cc119c50000030001000003000fe01b00092780"
        "00b71b000493c0005b8d84900001000b0081000014101e22241f41",
    ),
]
CAPTURED_AUDIO = [("mp4a", "118856e500"), ("Opus", "4f707573486561640101380180bb0000000000")]


# H.264 --------------------------------------------------------------------------------

X264_VECTORS = [
    pytest.param(
        "0142c028ffe100196742c028da01e0089f97011000000300100000030320f1832a01000468ce0fc8",
        VideoConfig("avc1", "H.264", 66, "Constrained Baseline", 4.0, 1920, 1080, 8, "4:2:0"),
        id="1080p-cropped",
    ),
    pytest.param(
        "0142c01fffe100176742c01fda014016ec0440000003004000000c83c60ca801000468ce0fc8",
        VideoConfig("avc1", "H.264", 66, "Constrained Baseline", 3.1, 1280, 720, 8, "4:2:0"),
        id="720p",
    ),
    pytest.param(
        "014d4028ffe10019674d4028f403c0227ef011000003000100000300321f162ea001000468de0fc8",
        VideoConfig("avc1", "H.264", 77, "Main", 4.0, 1920, 1080, 8, "4:2:0"),
        id="interlaced",
    ),
    pytest.param(
        "016e0028ffe1001b676e0028a6cb403c0113f2e022000003000200000300641e30654001000568ce0fc4"
        "0cfdfafa00",
        VideoConfig("avc1", "H.264", 110, "High 10", 4.0, 1920, 1080, 10, "4:2:0"),
        id="high10",
    ),
    pytest.param(
        "017a0028ffe1001a677a0028b6cb403c0113f13808800000030080000019078c195001000468ce0fc8"
        "fefafa00",
        VideoConfig("avc1", "H.264", 122, "High 4:2:2", 4.0, 1920, 1080, 10, "4:2:2"),
        id="high422-10",
    ),
    pytest.param(
        "01f40028ffe1001b67f40028919680780227e27011000003000100000300320f1832a001000768ce0f19"
        "100640fff8f800",
        VideoConfig("avc1", "H.264", 244, "High 4:4:4 Predictive", 4.0, 1920, 1080, 8, "4:4:4"),
        id="high444",
    ),
]


@pytest.mark.parametrize(("record", "expected"), X264_VECTORS)
def test_x264_records(record: str, expected: VideoConfig) -> None:
    assert describe_video("avc1", bytes.fromhex(record)) == expected


# x264 puts its scaling matrices in the PPS, so SPS scaling lists are built by hand.
# These two were checked by splicing them into x264 streams in place of x264's own
# SPS (same frame_num/POC fields): FFmpeg decodes every frame and reports the same
# profile, size and bit depth; one extra delta in a list makes both it and the parser fail.
SCALING_444 = [
    [-8],  # next scale 0 at once: use the default list
    None,
    [1] * 16,
    [5, 5, -18],  # stops at the third entry and repeats the last scale
    None,
    None,
    [3, -3] * 32,
    [-8],
    [127, -128, -7],
    None,
    [2] * 64,
    [-8],
]
SCALING_420 = [[-8], [1] * 16, None, [5, 5, -18], None, None, [3, -3] * 32, [127, -128, -7]]
SPS_444_SCALING = (
    "67f4002891b08a924924924925142812931cc731cc731cc731cc731cc731cc731cc731cc731cc731cc731cc7"
    "31cc731cc731cc731cc731cc784603f802023d210842108421084210842108421084210842108421084210842"
    "10842108421084210842108421084846d00f0044fc4a0"
)
SPS_10_SCALING = (
    "676e001fa6d8469249249249248a1409498e6398e6398e6398e6398e6398e6398e6398e6398e6398e6398e63"
    "98e6398e6398e6398e6398e63c07f004047da014016e40"
)


def test_high_444_sps_with_twelve_scaling_lists() -> None:
    sps = avc_sps(
        profile=244,
        chroma_format_idc=3,
        scaling_lists=SCALING_444,
        poc_type=2,
        crop=(0, 0, 0, 8),  # 4:4:4 crops in whole rows
    )
    assert sps.hex() == SPS_444_SCALING
    assert describe_video("avc1", avcc(sps)) == VideoConfig(
        "avc1", "H.264", 244, "High 4:4:4 Predictive", 4.0, 1920, 1080, 8, "4:4:4"
    )


def test_high10_sps_with_eight_scaling_lists() -> None:
    sps = avc_sps(
        profile=110,
        level=31,
        bit_depth=10,
        scaling_lists=SCALING_420,
        poc_type=2,
        width_mbs=80,
        height_map_units=45,
    )
    assert sps.hex() == SPS_10_SCALING
    assert describe_video("avc1", avcc(sps)) == VideoConfig(
        "avc1", "H.264", 110, "High 10", 3.1, 1280, 720, 10, "4:2:0"
    )


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [
        pytest.param({"crop": (0, 0, 0, 4)}, (1920, 1080), id="1088-coded-1080-shown"),
        pytest.param({"crop": (4, 4, 2, 2)}, (1904, 1080), id="crop-all-sides"),
        pytest.param(
            {"frame_mbs_only": False, "height_map_units": 34, "crop": (0, 0, 0, 2)},
            (1920, 1080),
            id="fields-crop-4-rows-per-unit",
        ),
        pytest.param(
            {"chroma_format_idc": 2, "crop": (1, 1, 1, 1)}, (1916, 1086), id="422-crop-units-2x1"
        ),
        pytest.param(
            {
                "chroma_format_idc": 0,
                "frame_mbs_only": False,
                "height_map_units": 34,
                "crop": (1, 1, 1, 1),
            },
            (1918, 1084),
            id="monochrome-fields",
        ),
        pytest.param(
            {"chroma_format_idc": 3, "separate_planes": True, "crop": (1, 1, 1, 1)},
            (1918, 1086),
            id="separate-colour-planes",
        ),
        pytest.param({"poc_type": 1, "poc_cycle": (1, -2, 300)}, (1920, 1088), id="poc-type-1"),
        pytest.param({"poc_type": 2, "log2_max_frame_num_minus4": 12}, (1920, 1088), id="poc2"),
    ],
)
def test_sps_size_and_cropping(kwargs: dict[str, object], size: tuple[int, int]) -> None:
    config = describe_video("avc1", avcc(avc_sps(**kwargs)))  # type: ignore[arg-type]
    assert (config.width, config.height) == size


def test_sps_emulation_prevention_is_removed() -> None:
    # Zero-heavy fields put 00 00 0x runs in the RBSP, which the encoder escapes.
    sps = avc_sps(profile=66, width_mbs=1 << 16, height_map_units=1 << 16, crop=(0, 0, 0, 0))
    assert b"\x00\x00\x03" in sps
    config = describe_video("avc1", avcc(sps))
    assert (config.width, config.height) == (16 << 16, 16 << 16)


def test_sps_chroma_and_depth_of_high_profiles() -> None:
    config = describe_video("avc1", avcc(avc_sps(chroma_format_idc=0, bit_depth=12)))
    assert (config.chroma_format, config.bit_depth) == ("4:0:0", 12)


@pytest.mark.parametrize(
    ("profile", "constraints", "name"),
    [
        (66, 0x00, "Baseline"),
        (66, 0x40, "Constrained Baseline"),
        (77, 0x40, "Main"),
        (88, 0x00, "Extended"),
        (100, 0x00, "High"),
        (100, 0x08, "Progressive High"),
        (100, 0x0C, "Constrained High"),
        (110, 0x10, "High 10 Intra"),
        (122, 0x10, "High 4:2:2 Intra"),
        (244, 0x10, "High 4:4:4 Intra"),
        (44, 0x00, "CAVLC 4:4:4 Intra"),
        (118, 0x00, "Multiview High"),
        (200, 0x00, None),
    ],
)
def test_avc_profile_names(profile: int, constraints: int, name: str | None) -> None:
    config = describe_video("avc1", avcc(avc_sps(profile=profile, constraints=constraints)))
    assert (config.profile, config.profile_name) == (profile, name)


def test_avcc_without_sps_falls_back_on_its_header() -> None:
    record = bytes.fromhex("014d401fffe0") + b"\x00"
    assert describe_video("avc1", record) == VideoConfig(
        "avc1", "H.264", 77, "Main", 3.1, None, None, 8, "4:2:0"
    )
    high = describe_video("avc1", bytes.fromhex("016e0028ffe000"))
    assert (high.profile_name, high.bit_depth, high.chroma_format) == ("High 10", None, None)


def test_avcc_skips_nal_units_that_are_not_an_sps() -> None:
    record = avcc(b"\x68\xce\x3c\x80", avc_sps(width_mbs=40, height_map_units=30))
    assert describe_video("avc1", record).width == 640


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\x64\x00\x28\xff\xe1", id="version-0"),
        pytest.param(b"\x00\x00\x00\x01\x67\x64\x00\x28", id="annex-b-instead-of-avcc"),
        pytest.param(bytes.fromhex("016400 28ffe1"), id="no-sps-length"),
        pytest.param(bytes.fromhex("01640028ffe10010676400"), id="sps-shorter-than-its-length"),
        pytest.param(avcc(b"\x67\x64\x00\x28"), id="sps-cut-after-level"),
        pytest.param(avcc(b"\x67\x64\x00\x28\x00\x00\x00\x00\x01\x80"), id="ue-32-zeros"),
        pytest.param(avcc(avc_sps(chroma_format_idc=4)), id="chroma-format-4"),
        pytest.param(avcc(avc_sps(bit_depth=15)), id="bit-depth-15"),
        pytest.param(avcc(avc_sps(poc_type=3)), id="poc-type-3"),
        pytest.param(avcc(avc_sps(poc_type=1, poc_cycle=(0,) * 256)), id="poc-cycle-256"),
        pytest.param(avcc(avc_sps(scaling_lists=[[200]] + [None] * 7)), id="delta-scale-200"),
        pytest.param(avcc(avc_sps(crop=(0, 0, 0, 544))), id="cropped-to-nothing"),
        pytest.param(avcc(avc_sps(crop=(960, 0, 0, 0))), id="cropped-width-to-nothing"),
    ],
)
def test_bad_avcc_raises_codec_error(record: bytes) -> None:
    with pytest.raises(CodecError):
        describe_video("avc1", record)


# HEVC ---------------------------------------------------------------------------------

X265_MAIN10_1080 = (
    "01022000000090000000000078f000fcfdfafa00000f03200001001840010c01ffff0220000003009000000300"
    "00030078959409210001002d420101022000000300900000030000030078a003c0801107cad965654a4c2f0168"
    "08000003000800000300c84022000100064401c073c189"
)
X265_444 = (
    "0104080000009e080000000078f000fcfff8f800000f03200001001740010c01ffff0408000003009e08000003"
    "000078959409210001002c4201010408000003009e08000003000078900078100220ee2f2caca94985e02d0100"
    "0003000100000300190822000100084401c07318301890"
)


def test_x265_records() -> None:
    assert describe_video("hvc1", bytes.fromhex(X265_MAIN10_1080)) == VideoConfig(
        "hvc1", "HEVC", 2, "Main 10", 4.0, 1920, 1080, 10, "4:2:0"
    )
    assert describe_video("hvc1", bytes.fromhex(X265_444)) == VideoConfig(
        "hvc1", "HEVC", 4, "Format Range Extensions", 4.0, 1918, 1078, 8, "4:4:4"
    )


def test_hevc_sps_with_sub_layers_and_conformance_window() -> None:
    sps = hevc_sps(
        profile=2,
        level=153,
        sub_layers=((True, True), (False, True), (True, False)),
        window=(2, 2, 0, 4),
        bit_depth=10,
    )
    record = hvcc((32, [b"\x40\x01\x0c\x01"]), (_HEVC_SPS_TYPE, [sps]), (34, [b"\x44\x01\xc0"]))
    assert describe_video("hvc1", record) == VideoConfig(
        "hvc1", "HEVC", 2, "Main 10", 5.1, 1912, 1080, 10, "4:2:0"
    )


def test_hevc_sps_emulation_prevention_is_removed() -> None:
    sps = hevc_sps(width=1 << 20, height=1 << 20, window=None)
    assert b"\x00\x00\x03" in sps
    config = describe_video("hvc1", hvcc((_HEVC_SPS_TYPE, [sps])))
    assert (config.width, config.height) == (1 << 20, 1 << 20)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"chroma_format_idc": 2, "window": (1, 1, 1, 1)}, (1916, 1086, "4:2:2")),
        ({"chroma_format_idc": 3, "window": (1, 1, 1, 1)}, (1918, 1086, "4:4:4")),
        (
            {"chroma_format_idc": 3, "separate_planes": True, "window": (1, 0, 1, 0)},
            (1919, 1087, "4:4:4"),
        ),
        ({"chroma_format_idc": 0, "window": (1, 1, 1, 1)}, (1918, 1086, "4:0:0")),
    ],
)
def test_hevc_conformance_window_units(
    kwargs: dict[str, object], expected: tuple[int, int, str]
) -> None:
    record = hvcc((_HEVC_SPS_TYPE, [hevc_sps(**kwargs)]))  # type: ignore[arg-type]
    config = describe_video("hvc1", record)
    assert (config.width, config.height, config.chroma_format) == expected


def test_hevc_takes_the_base_layer_sps() -> None:
    enhancement = hevc_sps(width=3840, height=2160, window=None, layer_id=1)
    base = hevc_sps(width=1280, height=720, window=None)
    config = describe_video("hvc1", hvcc((_HEVC_SPS_TYPE, [enhancement, base])))
    assert (config.width, config.height) == (1280, 720)


def test_hvcc_without_sps_falls_back_on_its_header() -> None:
    record = hvcc((32, [b"\x40\x01\x0c\x01"]), profile=2, level=120, bit_depth=10)
    assert describe_video("hvc1", record) == VideoConfig(
        "hvc1", "HEVC", 2, "Main 10", 4.0, None, None, 10, "4:2:0"
    )


def test_hevc_profile_0_defers_to_compatibility_flags() -> None:
    record = hvcc(profile=0, compatibility=1 << (31 - 2))
    assert describe_video("hvc1", record).profile_name == "Main 10"
    assert describe_video("hvc1", hvcc(profile=0, compatibility=0)).profile == 0


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(b"\x00" + bytes.fromhex(X265_MAIN10_1080)[1:], id="version-0"),
        pytest.param(bytes.fromhex(X265_MAIN10_1080)[:22], id="no-array-count"),
        pytest.param(bytes.fromhex(X265_MAIN10_1080)[:40], id="vps-cut"),
        pytest.param(hvcc((_HEVC_SPS_TYPE, [hevc_sps()[:10]])), id="sps-cut"),
        pytest.param(hvcc((_HEVC_SPS_TYPE, [hevc_sps(chroma_format_idc=4)])), id="chroma-4"),
        pytest.param(hvcc((_HEVC_SPS_TYPE, [hevc_sps(width=0)])), id="width-0"),
        pytest.param(hvcc((_HEVC_SPS_TYPE, [hevc_sps(bit_depth=17)])), id="bit-depth-17"),
        pytest.param(
            hvcc((_HEVC_SPS_TYPE, [hevc_sps(window=(960, 960, 0, 0))])), id="window-too-big"
        ),
    ],
)
def test_bad_hvcc_raises_codec_error(record: bytes) -> None:
    with pytest.raises(CodecError):
        describe_video("hvc1", record)


# AV1 ----------------------------------------------------------------------------------


def test_svt_av1_10bit_record() -> None:
    assert describe_video("av01", bytes.fromhex("81084c000a0c02000042955dfe1b805f0808")) == (
        VideoConfig("av01", "AV1", 0, "Main", 4.0, 1920, 1080, 10, "4:2:0")
    )


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"reduced": True, "levels": (13,)}, id="reduced-still-picture"),
        pytest.param({"levels": (13, 4)}, id="two-operating-points"),
        pytest.param({"timing": True, "levels": (13,)}, id="timing-info"),
        pytest.param(
            {"timing": True, "decoder_model": True, "display_delay": True, "levels": (13, 31, 2)},
            id="decoder-model-and-display-delay",
        ),
    ],
)
def test_av1_sequence_header_variants(header: dict[str, object]) -> None:
    payload = av1_sequence_header(width=3840, height=2160, **header)  # type: ignore[arg-type]
    record = av1c(obus=obu(2, b"") + obu(1, payload))  # a temporal delimiter first
    assert describe_video("av01", record) == VideoConfig(
        "av01", "AV1", 0, "Main", 5.1, 3840, 2160, 8, "4:2:0"
    )


def test_av1_obu_without_size_field_or_with_extension() -> None:
    payload = av1_sequence_header(width=640, height=360)
    for obus in (obu(1, payload, sized=False), obu(1, payload, extension=True)):
        config = describe_video("av01", av1c(obus=obus))
        assert (config.width, config.height) == (640, 360)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, (0, "Main", 4.0, 8, "4:2:0")),
        ({"monochrome": True}, (0, "Main", 4.0, 8, "4:0:0")),
        (
            {"profile": 1, "subsampling": (0, 0), "high_bitdepth": True},
            (1, "High", 4.0, 10, "4:4:4"),
        ),
        (
            {"profile": 2, "subsampling": (1, 0), "high_bitdepth": True, "twelve_bit": True},
            (2, "Professional", 4.0, 12, "4:2:2"),
        ),
        ({"level": 31}, (0, "Main", None, 8, "4:2:0")),
        ({"level": 0}, (0, "Main", 2.0, 8, "4:2:0")),
        ({"level": 23}, (0, "Main", 7.3, 8, "4:2:0")),
    ],
)
def test_av1c_fields_without_config_obus(
    kwargs: dict[str, object], expected: tuple[object, ...]
) -> None:
    config = describe_video("av01", av1c(**kwargs))  # type: ignore[arg-type]
    assert (config.width, config.height) == (None, None)
    assert (
        config.profile,
        config.profile_name,
        config.level,
        config.bit_depth,
        config.chroma_format,
    ) == expected


def test_av1_mpeg2ts_descriptor() -> None:
    descriptor = b"\x80\x04" + av1c(level=13, high_bitdepth=True)
    assert describe_video("av01", descriptor) == VideoConfig(
        "av01", "AV1", 0, "Main", 5.1, None, None, 10, "4:2:0"
    )


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x01\x00\x0c\x00", id="no-marker"),
        pytest.param(b"\x81\x00\x0c", id="cut-header"),
        pytest.param(av1c(obus=b"\x8a\x00"), id="forbidden-bit"),
        pytest.param(av1c(obus=b"\x0a\x0b\x00"), id="obu-shorter-than-its-size"),
        pytest.param(av1c(obus=b"\x0a" + b"\xff" * 8 + b"\x01"), id="leb128-9-bytes"),
        pytest.param(av1c(obus=b"\x0a"), id="no-size"),
        pytest.param(av1c(obus=obu(1, av1_sequence_header()[:3])), id="sequence-header-cut"),
    ],
)
def test_bad_av1c_raises_codec_error(record: bytes) -> None:
    with pytest.raises(CodecError):
        describe_video("av01", record)


# VP8, VP9 and VVC ---------------------------------------------------------------------


def test_vp9_records() -> None:
    # libvpx-vp9 yuv444p10le, as FFmpeg sends it: FullBox version 1 and flags first.
    assert describe_video("vp09", bytes.fromhex("010000000314a60202020000")) == VideoConfig(
        "vp09", "VP9", 3, "Profile 3", 2.0, None, None, 10, "4:4:4"
    )
    bare = bytes.fromhex("0229c40202020000")  # profile 2, level 4.1, 12-bit 4:2:2
    assert describe_video("vp09", bare) == VideoConfig(
        "vp09", "VP9", 2, "Profile 2", 4.1, None, None, 12, "4:2:2"
    )
    vp8 = describe_video("vp08", bytes.fromhex("0000820202020000"))
    assert (vp8.codec_name, vp8.level, vp8.bit_depth) == ("VP8", None, 8)


@pytest.mark.parametrize(
    "record",
    [b"", b"\x01\x00\x00\x00", bytes.fromhex("0000820202"), bytes.fromhex("0000420202020000")],
    ids=["empty", "header-only", "cut", "bit-depth-4"],
)
def test_bad_vpcc_raises_codec_error(record: bytes) -> None:
    with pytest.raises(CodecError):
        describe_video("vp09", record)


def vvcc(*, sub_layers: int = 3, sub_levels: tuple[bool, ...] = (True, False)) -> bytes:
    bits = Bits().u(5, 31).u(2, 3).u(1, 1)
    bits.u(9, 0).u(3, sub_layers).u(2, 0).u(2, 3).u(3, 2).u(5, 31)
    bits.u(2, 0).u(6, 2).u(7, 33).u(1, 1).u(8, 83).u(16, 0xFFFF)  # 2 constraint bytes
    if sub_layers > 1:
        for present in sub_levels:
            bits.flag(present)
        bits.u(9 - sub_layers, 0)
        for present in sub_levels:
            if present:
                bits.u(8, 80)
    bits.u(8, 2).u(32, 1).u(32, 2)  # two sub-profiles
    bits.u(16, 3840).u(16, 2160).u(16, 0).u(8, 0)
    return bits.to_bytes()


def test_vvcc_fields() -> None:
    expected = VideoConfig("vvc1", "VVC", 33, "Main 10 4:4:4", 5.1, 3840, 2160, 10, "4:4:4")
    assert describe_video("vvc1", vvcc()) == expected
    assert describe_video("vvc1", vvcc(sub_layers=1, sub_levels=())) == expected
    assert describe_video("vvc1", b"\x00\x00\x00\x00" + vvcc()) == expected  # FullBox header
    assert describe_video("vvc1", b"\xfe\x00") == VideoConfig("vvc1", "VVC")  # no PTL


@pytest.mark.parametrize("record", [b"", b"\xff", vvcc()[:12], vvcc()[:-6]])
def test_bad_vvcc_raises_codec_error(record: bytes) -> None:
    with pytest.raises(CodecError):
        describe_video("vvc1", record)


def test_unknown_video_fourcc_gives_only_the_codec() -> None:
    assert describe_video("vp6f", b"\x00\x01") == VideoConfig("vp6f")
    assert describe_video("", b"") == VideoConfig("")


# AAC ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(
            bytes.fromhex("123056e500"), AudioConfig("mp4a", "AAC", "AAC-LC", 44100, 6), id="5.1"
        ),
        pytest.param(
            asc((5, 2), (4, 15), (24, 50000), (4, 2), (3, 0)),
            AudioConfig("mp4a", "AAC", "AAC-LC", 50000, 2),
            id="explicit-frequency",
        ),
        pytest.param(
            asc((5, 5), (4, 6), (4, 2), (4, 3), (5, 2), (3, 0)),
            AudioConfig("mp4a", "AAC", "HE-AAC (SBR)", 48000, 2),
            id="he-aac-explicit",
        ),
        pytest.param(
            asc((5, 5), (4, 6), (4, 2), (4, 15), (24, 44000), (5, 2), (3, 0)),
            AudioConfig("mp4a", "AAC", "HE-AAC (SBR)", 44000, 2),
            id="he-aac-explicit-frequency",
        ),
        pytest.param(
            asc((5, 29), (4, 6), (4, 1), (4, 3), (5, 2), (3, 0)),
            AudioConfig("mp4a", "AAC", "HE-AACv2 (PS)", 48000, 2),
            id="he-aac-v2-explicit",
        ),
        pytest.param(
            asc((5, 2), (4, 7), (4, 2), (3, 0), (11, 0x2B7), (5, 5), (1, 1), (4, 4)),
            AudioConfig("mp4a", "AAC", "HE-AAC (SBR)", 44100, 2),
            id="he-aac-backward-compatible",
        ),
        pytest.param(
            asc(
                (5, 2),
                (4, 6),
                (4, 1),
                (3, 0),
                (11, 0x2B7),
                (5, 5),
                (1, 1),
                (4, 3),
                (11, 0x548),
                (1, 1),
            ),
            AudioConfig("mp4a", "AAC", "HE-AACv2 (PS)", 48000, 2),
            id="he-aac-v2-backward-compatible",
        ),
        pytest.param(
            asc(
                (5, 2),
                (4, 3),
                (4, 2),
                (1, 0),
                (1, 1),
                (14, 0x3FFF),
                (1, 1),
                (1, 0),
                (11, 0x2B7),
                (5, 5),
                (1, 1),
                (4, 3),
            ),
            AudioConfig("mp4a", "AAC", "HE-AAC (SBR)", 48000, 2),
            id="core-coder-delay-and-extension-flag",
        ),
        pytest.param(
            asc((5, 6), (4, 3), (4, 2), (3, 0), (3, 7), (11, 0x2B7), (5, 5), (1, 0)),
            AudioConfig("mp4a", "AAC", "AAC Scalable", 48000, 2),
            id="scalable-layer-and-sbr-absent",
        ),
        pytest.param(
            asc((5, 31), (6, 7), (4, 3), (4, 2)),
            AudioConfig("mp4a", "AAC", "AAC-ELD", 48000, 2),
            id="object-type-escape",
        ),
        pytest.param(
            asc((5, 31), (6, 50), (4, 3), (4, 2)),
            AudioConfig("mp4a", "AAC", "object type 82", 48000, 2),
            id="unnamed-object-type",
        ),
        pytest.param(
            asc((5, 29), (4, 8), (4, 1), (4, 5), (5, 22), (4, 1)),
            AudioConfig("mp4a", "AAC", "HE-AACv2 (PS)", 32000, 2),
            id="ps-over-bsac",
        ),
        pytest.param(
            asc((5, 2), (4, 3), (4, 7), (3, 0)),
            AudioConfig("mp4a", "AAC", "AAC-LC", 48000, 8),
            id="7.1",
        ),
        pytest.param(
            asc((5, 2), (4, 3), (4, 0), (3, 0)),
            AudioConfig("mp4a", "AAC", "AAC-LC", 48000, None),
            id="channels-in-a-pce",
        ),
        pytest.param(
            asc((5, 2), (4, 3), (4, 1)),
            AudioConfig("mp4a", "AAC", "AAC-LC", 48000, 1),
            id="shortest",
        ),
    ],
)
def test_audio_specific_config(record: bytes, expected: AudioConfig) -> None:
    assert describe_audio("mp4a", record) == expected


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x11", id="cut-in-frequency"),
        pytest.param(asc((5, 0), (4, 3), (4, 2)), id="null-object-type"),
        pytest.param(bytes.fromhex("010100000004"), id="a-multichannel-config-body"),
        pytest.param(asc((5, 2), (4, 13), (4, 2)), id="reserved-frequency-index"),
        pytest.param(asc((5, 2), (4, 15), (24, 0), (4, 2)), id="frequency-0"),
        pytest.param(asc((5, 2), (4, 15), (8, 1)), id="explicit-frequency-cut"),
        pytest.param(asc((5, 31), (2, 1)), id="object-type-escape-cut"),
        pytest.param(asc((5, 5), (4, 6), (4, 2), (3, 0)), id="sbr-cut-in-extension-frequency"),
        pytest.param(
            asc((5, 2), (4, 6), (4, 2), (3, 0), (11, 0x2B7), (5, 5), (1, 1), (4, 14)),
            id="sync-extension-reserved-index",
        ),
    ],
)
def test_bad_audio_specific_config_raises_codec_error(record: bytes) -> None:
    with pytest.raises(CodecError):
        describe_audio("mp4a", record)


# Opus, FLAC and the rest --------------------------------------------------------------


def test_opus_heads() -> None:
    surround = bytes.fromhex("4f707573486561640106380180bb00000000010402000401020305")
    assert describe_audio("Opus", surround) == AudioConfig(
        "Opus", "Opus", None, 48000, 6, input_sample_rate=48000, pre_skip=312
    )
    assert describe_audio("Opus", opus_head(2, rate=44100)) == AudioConfig(
        "Opus", "Opus", None, 48000, 2, input_sample_rate=44100, pre_skip=3840
    )
    unspecified = describe_audio("Opus", opus_head(1, rate=0))
    assert (unspecified.sample_rate, unspecified.input_sample_rate) == (48000, None)
    tags = b"OpusTags\x07\x00\x00\x00libopus\x00\x00\x00\x00"
    assert describe_audio("Opus", tags) == AudioConfig("Opus", "Opus", sample_rate=48000)


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"OpusHeaX" + opus_head()[8:], id="bad-magic"),
        pytest.param(opus_head()[:18], id="cut"),
        pytest.param(opus_head()[:8] + b"\x10" + opus_head()[9:], id="major-version-1"),
        pytest.param(opus_head(0), id="no-channels"),
        pytest.param(opus_head(6, family=1)[:-1], id="mapping-table-cut"),
    ],
)
def test_bad_opus_head_raises_codec_error(record: bytes) -> None:
    with pytest.raises(CodecError):
        describe_audio("Opus", record)


FLAC_STREAMINFO = bytes.fromhex(
    "040004000000000010980ac442f00000000000000000000000000000000000000000"
)


def test_flac_streaminfo_in_each_framing() -> None:
    expected = AudioConfig("fLaC", "FLAC", None, 44100, 2)
    block_header = b"\x80\x00\x00\x22"
    for record in (
        FLAC_STREAMINFO,
        block_header + FLAC_STREAMINFO,
        b"fLaC" + block_header + FLAC_STREAMINFO,
    ):
        assert describe_audio("fLaC", record) == expected


@pytest.mark.parametrize(
    "record", [b"", FLAC_STREAMINFO[:33], b"fLaC\x80\x00\x00\x22", FLAC_STREAMINFO[:10] + bytes(24)]
)
def test_bad_flac_raises_codec_error(record: bytes) -> None:
    with pytest.raises(CodecError):
        describe_audio("fLaC", record)


def test_codecs_without_a_record_and_unknown_fourccs() -> None:
    assert describe_audio("ac-3", b"") == AudioConfig("ac-3", "AC-3")
    assert describe_audio("ec-3", b"\xff") == AudioConfig("ec-3", "E-AC-3")
    assert describe_audio(".mp3", b"") == AudioConfig(".mp3", "MP3")
    assert describe_audio("speex", b"\x01") == AudioConfig("speex")


# The bit reader -----------------------------------------------------------------------


def test_bit_reader_reads_across_byte_boundaries() -> None:
    reader = _BitReader(bytes.fromhex("a5c3ff00"), "test")
    assert reader.read_bits(3) == 0b101
    assert reader.read_bits(9) == 0b001011100
    assert reader.read_bits(0) == 0
    assert reader.read_bytes(2) == bytes.fromhex("3ff0")  # not byte aligned
    assert reader.remaining() == 4
    reader.skip_bits(4)
    with pytest.raises(CodecError, match="test truncated"):
        reader.read_bits(1)


def test_bit_reader_exp_golomb() -> None:
    values = [0, 1, 2, 3, 7, 255, (1 << 32) - 2]
    signed = [0, 1, -1, 2, -2, 1000, -1000]
    bits = Bits()
    for value in values:
        bits.ue(value)
    for value in signed:
        bits.se(value)
    reader = _BitReader(bits.rbsp(), "test")
    assert [reader.read_ue() for _ in values] == values
    assert [reader.read_se() for _ in signed] == signed


def test_bit_reader_refuses_exp_golomb_codes_beyond_32_bits() -> None:
    with pytest.raises(CodecError, match="longer than 32 bits"):
        _BitReader(b"\x00\x00\x00\x00\x80\x00\x00\x00\x00", "test").read_ue()
    with pytest.raises(CodecError, match="truncated"):
        _BitReader(b"\x00\x00", "test").read_ue()


@pytest.mark.parametrize(
    ("escaped", "rbsp"),
    [
        ("6742", "6742"),
        ("000003", "0000"),
        ("00000301", "000001"),
        ("0000030000030000", "000000000000"),
        ("00000303", "000003"),
        ("0000030003", "00000003"),  # the zero count restarts
        ("aa000003bb000003", "aa0000bb0000"),
    ],
)
def test_unescape(escaped: str, rbsp: str) -> None:
    assert _unescape(bytes.fromhex(escaped)).hex() == rbsp


# Properties ---------------------------------------------------------------------------

VIDEO_FOURCCS = ["avc1", "hvc1", "av01", "vp09", "vp08", "vvc1", "h263"]
AUDIO_FOURCCS = ["mp4a", "Opus", "fLaC", "ac-3", "ec-3", ".mp3", "nelly"]


def check_video(fourcc: str, record: bytes) -> None:
    try:
        config = describe_video(fourcc, record)
    except CodecError:
        return
    assert isinstance(config, VideoConfig)
    assert config.codec == fourcc


def check_audio(fourcc: str, record: bytes) -> None:
    try:
        config = describe_audio(fourcc, record)
    except CodecError:
        return
    assert isinstance(config, AudioConfig)
    assert config.codec == fourcc


@given(st.sampled_from(VIDEO_FOURCCS), st.binary(max_size=300))
def test_any_bytes_as_video_record_describe_or_raise_codec_error(
    fourcc: str, record: bytes
) -> None:
    check_video(fourcc, record)


@given(st.sampled_from(AUDIO_FOURCCS), st.binary(max_size=300))
def test_any_bytes_as_audio_record_describe_or_raise_codec_error(
    fourcc: str, record: bytes
) -> None:
    check_audio(fourcc, record)


# Random bytes rarely get past a version byte, so also mutate real records.
VIDEO_SEEDS = [(codec, bytes.fromhex(record)) for codec, record in CAPTURED_VIDEO] + [
    ("avc1", avcc(bytes.fromhex(SPS_444_SCALING))),
    ("avc1", avcc(bytes.fromhex(SPS_10_SCALING))),
    ("hvc1", bytes.fromhex(X265_MAIN10_1080)),
    (
        "av01",
        av1c(
            obus=obu(
                1,
                av1_sequence_header(
                    timing=True, decoder_model=True, display_delay=True, levels=(9, 3)
                ),
            )
        ),
    ),
    ("vvc1", vvcc()),
]
AUDIO_SEEDS = [(codec, bytes.fromhex(record)) for codec, record in CAPTURED_AUDIO] + [
    (
        "mp4a",
        asc(
            (5, 2), (4, 6), (4, 1), (3, 0), (11, 0x2B7), (5, 5), (1, 1), (4, 3), (11, 0x548), (1, 1)
        ),
    ),
    ("Opus", opus_head(6, family=1)),
    ("fLaC", FLAC_STREAMINFO),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    codec, body = draw(st.sampled_from(seeds))
    data = bytearray(body)
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return codec, bytes(data[: draw(st.integers(0, len(data)))])


@given(mutated(VIDEO_SEEDS))
def test_mutated_video_records_describe_or_raise_codec_error(case: tuple[str, bytes]) -> None:
    check_video(*case)


@given(mutated(AUDIO_SEEDS))
def test_mutated_audio_records_describe_or_raise_codec_error(case: tuple[str, bytes]) -> None:
    check_audio(*case)
