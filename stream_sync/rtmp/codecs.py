"""What a stream really carries, read from its codec configuration records.

Encoders lie in onMetaData, and the legacy FLV audio flags byte claims 44.1 kHz
stereo for every AAC stream, so the stream monitor takes codec, profile, level,
picture size and sample rate from the record in the sequence start instead
(`CodecConfigured.packet.body`). Only the fields the monitor shows are parsed;
whatever follows them is not read, so a record is judged malformed only as far
as those fields go.

Records come from the peer: every read is bounds-checked and every loop is
bounded by the input, so a bad record raises `CodecError` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class CodecError(ValueError):
    """A configuration record is malformed or truncated; the message holds no payload bytes."""


@dataclass(frozen=True, slots=True)
class VideoConfig:
    codec: str  # FourCC, e.g. "avc1"
    codec_name: str | None = None  # None: a codec this module does not know
    profile: int | None = None
    profile_name: str | None = None
    level: float | None = None
    width: int | None = None  # displayed size, after cropping where the record says
    height: int | None = None
    bit_depth: int | None = None  # luma
    chroma_format: str | None = None  # "4:0:0", "4:2:0", "4:2:2" or "4:4:4"


@dataclass(frozen=True, slots=True)
class AudioConfig:
    codec: str  # FourCC, e.g. "mp4a"
    codec_name: str | None = None
    profile_name: str | None = None
    # What a decoder outputs: SBR doubles the AAC core rate, PS makes mono stereo,
    # Opus always decodes at 48 kHz.
    sample_rate: int | None = None
    channels: int | None = None
    input_sample_rate: int | None = None  # Opus only: what the encoder was fed
    pre_skip: int | None = None  # Opus only: samples (at 48 kHz) to drop at the start


_CHROMA_FORMATS = ("4:0:0", "4:2:0", "4:2:2", "4:4:4")


class _BitReader:
    """MSB-first reader over a record; any read past the end raises CodecError."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0  # in bits
        self.what = what

    def remaining(self) -> int:
        return len(self.data) * 8 - self.pos

    def _advance(self, n: int) -> int:
        end = self.pos + n
        if end > len(self.data) * 8:
            raise CodecError(f"{self.what} truncated")
        self.pos = end
        return end

    def read_bits(self, n: int) -> int:
        start = self.pos
        end = self._advance(n)
        if n == 0:
            return 0
        first, last = start >> 3, (end + 7) >> 3
        value = int.from_bytes(self.data[first:last], "big") >> ((last << 3) - end)
        return value & ((1 << n) - 1)

    def read_flag(self) -> bool:
        return self.read_bits(1) == 1

    def skip_bits(self, n: int) -> None:
        self._advance(n)

    def read_bytes(self, n: int) -> bytes:
        if self.pos & 7:
            return self.read_bits(8 * n).to_bytes(n, "big")
        start = self.pos >> 3
        self._advance(8 * n)
        return self.data[start : start + n]

    def read_ue(self) -> int:
        """Exp-Golomb ue(v); H.264/H.265 values fit 32 bits, so 32 leading zeros is an error."""
        zeros = 0
        while not self.read_bits(1):
            zeros += 1
            if zeros > 31:
                raise CodecError(f"{self.what}: Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.read_bits(zeros)

    def read_se(self) -> int:
        code = self.read_ue()
        return (code + 1) >> 1 if code & 1 else -(code >> 1)


def _unescape(nal: bytes) -> bytes:
    """Drop emulation-prevention bytes (the 03 in 00 00 03) to get the RBSP back."""
    start = nal.find(b"\x00\x00\x03")
    if start < 0:
        return nal
    out = bytearray()
    pos = 0
    while start >= 0:  # each pass moves pos forward by at least 3 bytes
        out += nal[pos : start + 2]
        pos = start + 3
        start = nal.find(b"\x00\x00\x03", pos)
    out += nal[pos:]
    return bytes(out)


def _level(level_idc: int, divisor: int) -> float | None:
    """H.264 counts levels in tenths, HEVC in thirtieths; 0 is not a level."""
    return round(level_idc / divisor, 1) if level_idc else None


def _cropped(size: int, unit: int, before: int, after: int, what: str) -> int:
    cropped = size - unit * (before + after)
    if cropped <= 0:
        raise CodecError(f"{what}: cropping leaves no picture")
    return cropped


# H.264 ------------------------------------------------------------------------------

# Profiles whose SPS carries chroma format, bit depths and scaling lists.
_AVC_HIGH_PROFILES = frozenset((44, 83, 86, 100, 110, 118, 122, 128, 134, 135, 138, 139, 244))
_AVC_PROFILES = {
    44: "CAVLC 4:4:4 Intra",
    66: "Baseline",
    77: "Main",
    83: "Scalable Baseline",
    86: "Scalable High",
    88: "Extended",
    100: "High",
    110: "High 10",
    118: "Multiview High",
    122: "High 4:2:2",
    128: "Stereo High",
    134: "MFC High",
    135: "MFC Depth High",
    138: "Multiview Depth High",
    139: "Enhanced Multiview Depth High",
    244: "High 4:4:4 Predictive",
}
_AVC_INTRA_PROFILES = {110: "High 10 Intra", 122: "High 4:2:2 Intra", 244: "High 4:4:4 Intra"}


def _avc_profile_name(profile: int, constraints: int) -> str | None:
    """Constraint flags (set0 is the top bit) turn some profiles into their named subsets."""
    if profile == 66 and constraints & 0x40:
        return "Constrained Baseline"
    if profile == 100 and constraints & 0x08:
        return "Constrained High" if constraints & 0x04 else "Progressive High"
    if profile in _AVC_INTRA_PROFILES and constraints & 0x10:
        return _AVC_INTRA_PROFILES[profile]
    return _AVC_PROFILES.get(profile)


def _describe_avc(fourcc: str, record: bytes) -> VideoConfig:
    reader = _BitReader(record, "avcC")
    if reader.read_bits(8) != 1:
        raise CodecError("avcC: unknown configurationVersion")
    profile, constraints, level = reader.read_bits(8), reader.read_bits(8), reader.read_bits(8)
    reader.skip_bits(8)  # reserved bits and lengthSizeMinusOne
    sps: bytes | None = None
    for _ in range(reader.read_bits(8) & 0x1F):
        nal = reader.read_bytes(reader.read_bits(16))
        if sps is None and nal and nal[0] & 0x1F == 7:
            sps = nal
    if sps is not None:
        return _avc_sps(fourcc, sps)
    high = profile in _AVC_HIGH_PROFILES
    return VideoConfig(
        fourcc,
        "H.264",
        profile,
        _avc_profile_name(profile, constraints),
        _level(level, 10),
        bit_depth=None if high else 8,
        chroma_format=None if high else "4:2:0",
    )


def _skip_scaling_list(reader: _BitReader, size: int) -> None:
    last = following = 8
    for _ in range(size):
        if following:
            delta = reader.read_se()
            if not -128 <= delta <= 127:
                raise CodecError("H.264 SPS: delta_scale out of range")
            following = (last + delta + 256) % 256
        last = following or last


def _avc_sps(fourcc: str, nal: bytes) -> VideoConfig:
    """H.264 7.3.2.1.1, up to the frame cropping that gives the displayed size."""
    reader = _BitReader(_unescape(nal[1:]), "H.264 SPS")
    profile, constraints, level = reader.read_bits(8), reader.read_bits(8), reader.read_bits(8)
    reader.read_ue()  # seq_parameter_set_id
    chroma_format_idc, separate_planes, bit_depth = 1, False, 8
    if profile in _AVC_HIGH_PROFILES:
        chroma_format_idc = reader.read_ue()
        if chroma_format_idc > 3:
            raise CodecError("H.264 SPS: chroma_format_idc out of range")
        if chroma_format_idc == 3:
            separate_planes = reader.read_flag()
        bit_depth = 8 + reader.read_ue()
        if bit_depth > 14:
            raise CodecError("H.264 SPS: bit depth out of range")
        reader.read_ue()  # bit_depth_chroma_minus8
        reader.skip_bits(1)  # qpprime_y_zero_transform_bypass_flag
        if reader.read_flag():  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma_format_idc == 3 else 8):
                if reader.read_flag():
                    _skip_scaling_list(reader, 16 if i < 6 else 64)
    reader.read_ue()  # log2_max_frame_num_minus4
    poc_type = reader.read_ue()
    if poc_type == 0:
        reader.read_ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        reader.skip_bits(1)  # delta_pic_order_always_zero_flag
        reader.read_se()  # offset_for_non_ref_pic
        reader.read_se()  # offset_for_top_to_bottom_field
        cycle = reader.read_ue()
        if cycle > 255:
            raise CodecError("H.264 SPS: POC cycle too long")
        for _ in range(cycle):
            reader.read_se()
    elif poc_type != 2:
        raise CodecError("H.264 SPS: pic_order_cnt_type out of range")
    reader.read_ue()  # max_num_ref_frames
    reader.skip_bits(1)  # gaps_in_frame_num_value_allowed_flag
    width = (reader.read_ue() + 1) * 16
    map_units = reader.read_ue() + 1
    frame_mbs_only = reader.read_flag()
    height = map_units * 16 * (1 if frame_mbs_only else 2)
    if not frame_mbs_only:
        reader.skip_bits(1)  # mb_adaptive_frame_field_flag
    reader.skip_bits(1)  # direct_8x8_inference_flag
    if reader.read_flag():  # frame_cropping_flag
        left, right, top, bottom = (reader.read_ue() for _ in range(4))
        if separate_planes or chroma_format_idc == 0:
            unit_x, unit_y = 1, 1
        else:
            unit_x, unit_y = (
                (1 if chroma_format_idc == 3 else 2),
                (2 if chroma_format_idc == 1 else 1),
            )
        unit_y *= 1 if frame_mbs_only else 2
        width = _cropped(width, unit_x, left, right, "H.264 SPS")
        height = _cropped(height, unit_y, top, bottom, "H.264 SPS")
    return VideoConfig(
        fourcc,
        "H.264",
        profile,
        _avc_profile_name(profile, constraints),
        _level(level, 10),
        width,
        height,
        bit_depth,
        _CHROMA_FORMATS[chroma_format_idc],
    )


# HEVC -------------------------------------------------------------------------------

_HEVC_PROFILES = {
    1: "Main",
    2: "Main 10",
    3: "Main Still Picture",
    4: "Format Range Extensions",
    5: "High Throughput",
    6: "Multiview Main",
    7: "Scalable Main",
    8: "3D Main",
    9: "Screen Content Coding Extensions",
    10: "Scalable Format Range Extensions",
    11: "High Throughput Screen Content Coding Extensions",
}
_HEVC_SPS = 33


def _hevc_profile(profile: int, compatibility: int) -> int:
    """general_profile_idc 0 defers to the compatibility flags (flag j is bit 31 - j)."""
    if profile:
        return profile
    for j in range(1, 32):
        if compatibility >> (31 - j) & 1:
            return j
    return 0


def _describe_hevc(fourcc: str, record: bytes) -> VideoConfig:
    reader = _BitReader(record, "hvcC")
    if reader.read_bits(8) != 1:
        raise CodecError("hvcC: unknown configurationVersion")
    reader.skip_bits(3)  # general_profile_space, general_tier_flag
    profile = reader.read_bits(5)
    compatibility = reader.read_bits(32)
    reader.skip_bits(48)  # general_constraint_indicator_flags
    level = reader.read_bits(8)
    reader.skip_bits(16 + 8 + 6)  # min_spatial_segmentation, parallelismType, reserved
    chroma_format_idc = reader.read_bits(2)
    reader.skip_bits(5)
    bit_depth = 8 + reader.read_bits(3)
    reader.skip_bits(8 + 16 + 8)  # bitDepthChroma, avgFrameRate, frame rate/layers/length
    sps: bytes | None = None
    for _ in range(reader.read_bits(8)):
        reader.skip_bits(8)  # array_completeness, NAL_unit_type (the NAL header repeats it)
        for _ in range(reader.read_bits(16)):  # each NAL unit consumes at least 2 bytes
            nal = reader.read_bytes(reader.read_bits(16))
            # Only the base layer's SPS (nuh_layer_id 0): other layers use another syntax.
            header = int.from_bytes(nal[:2], "big")
            base_sps = header >> 9 & 0x3F == _HEVC_SPS and not header >> 3 & 0x3F
            if sps is None and len(nal) > 2 and base_sps:
                sps = nal
    if sps is not None:
        return _hevc_sps(fourcc, sps)
    return _hevc_config(
        fourcc, profile, compatibility, level, None, None, bit_depth, chroma_format_idc
    )


def _hevc_config(
    fourcc: str,
    profile: int,
    compatibility: int,
    level: int,
    width: int | None,
    height: int | None,
    bit_depth: int,
    chroma_format_idc: int,
) -> VideoConfig:
    profile = _hevc_profile(profile, compatibility)
    return VideoConfig(
        fourcc,
        "HEVC",
        profile,
        _HEVC_PROFILES.get(profile),
        _level(level, 30),
        width,
        height,
        bit_depth,
        _CHROMA_FORMATS[chroma_format_idc],
    )


def _hevc_sps(fourcc: str, nal: bytes) -> VideoConfig:
    """H.265 7.3.2.2.1, up to the bit depth; profile_tier_level per 7.3.3."""
    reader = _BitReader(_unescape(nal[2:]), "HEVC SPS")
    reader.skip_bits(4)  # sps_video_parameter_set_id
    sub_layers = reader.read_bits(3)  # sps_max_sub_layers_minus1
    reader.skip_bits(1)  # sps_temporal_id_nesting_flag
    reader.skip_bits(3)  # general_profile_space, general_tier_flag
    profile = reader.read_bits(5)
    compatibility = reader.read_bits(32)
    reader.skip_bits(48)  # source and constraint flags
    level = reader.read_bits(8)
    present = [(reader.read_flag(), reader.read_flag()) for _ in range(sub_layers)]
    if sub_layers:
        reader.skip_bits(2 * (8 - sub_layers))  # reserved_zero_2bits
    for profile_present, level_present in present:
        reader.skip_bits((88 if profile_present else 0) + (8 if level_present else 0))
    reader.read_ue()  # sps_seq_parameter_set_id
    chroma_format_idc = reader.read_ue()
    if chroma_format_idc > 3:
        raise CodecError("HEVC SPS: chroma_format_idc out of range")
    separate_planes = chroma_format_idc == 3 and reader.read_flag()
    width, height = reader.read_ue(), reader.read_ue()
    if not width or not height:
        raise CodecError("HEVC SPS: empty picture")
    if reader.read_flag():  # conformance_window_flag
        left, right, top, bottom = (reader.read_ue() for _ in range(4))
        unit_x = 2 if chroma_format_idc in (1, 2) and not separate_planes else 1
        unit_y = 2 if chroma_format_idc == 1 and not separate_planes else 1
        width = _cropped(width, unit_x, left, right, "HEVC SPS")
        height = _cropped(height, unit_y, top, bottom, "HEVC SPS")
    bit_depth = 8 + reader.read_ue()
    if bit_depth > 16:
        raise CodecError("HEVC SPS: bit depth out of range")
    return _hevc_config(
        fourcc, profile, compatibility, level, width, height, bit_depth, chroma_format_idc
    )


# AV1 --------------------------------------------------------------------------------

_AV1_PROFILES = {0: "Main", 1: "High", 2: "Professional"}
_AV1_SEQUENCE_HEADER = 1
_AV1_MAX_LEVEL = 31  # seq_level_idx 31: no level constraints


def _av1_level(seq_level_idx: int) -> float | None:
    if seq_level_idx >= _AV1_MAX_LEVEL:
        return None
    return round(2 + (seq_level_idx >> 2) + (seq_level_idx & 3) / 10, 1)


def _read_leb128(reader: _BitReader) -> int:
    value = 0
    for i in range(8):
        byte = reader.read_bits(8)
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value
    raise CodecError("AV1 OBU size longer than 8 bytes")


def _av1_sequence_header(obus: bytes) -> bytes | None:
    """The payload of the first sequence header OBU among av1C's configOBUs."""
    reader = _BitReader(obus, "av1C configOBUs")
    while reader.remaining():  # each OBU consumes at least its header byte
        header = reader.read_bits(8)
        if header & 0x80:
            raise CodecError("AV1 OBU with the forbidden bit set")
        if header & 0x04:
            reader.skip_bits(8)  # obu_extension_header
        size = _read_leb128(reader) if header & 0x02 else reader.remaining() // 8
        payload = reader.read_bytes(size)
        if header >> 3 & 0x0F == _AV1_SEQUENCE_HEADER:
            return payload
    return None


def _skip_uvlc(reader: _BitReader) -> None:
    zeros = 0
    while not reader.read_bits(1):  # bounded by the input: each pass consumes a bit
        zeros += 1
    if zeros < 32:
        reader.skip_bits(zeros)


def _parse_av1_sequence_header(payload: bytes) -> tuple[int, int, int, int]:
    """(seq_profile, seq_level_idx[0], max width, max height) per AV1 5.5.1."""
    reader = _BitReader(payload, "AV1 sequence header")
    profile = reader.read_bits(3)
    reader.skip_bits(1)  # still_picture
    if reader.read_flag():  # reduced_still_picture_header
        level = reader.read_bits(5)
    else:
        decoder_model_info = False
        buffer_delay_bits = 0
        if reader.read_flag():  # timing_info_present_flag
            reader.skip_bits(64)  # num_units_in_display_tick, time_scale
            if reader.read_flag():  # equal_picture_interval
                _skip_uvlc(reader)
            decoder_model_info = reader.read_flag()
            if decoder_model_info:
                buffer_delay_bits = reader.read_bits(5) + 1
                reader.skip_bits(32 + 5 + 5)
        initial_display_delay = reader.read_flag()
        level = 0
        for i in range(reader.read_bits(5) + 1):
            reader.skip_bits(12)  # operating_point_idc
            seq_level_idx = reader.read_bits(5)
            if i == 0:
                level = seq_level_idx
            if seq_level_idx > 7:
                reader.skip_bits(1)  # seq_tier
            if decoder_model_info and reader.read_flag():
                reader.skip_bits(2 * buffer_delay_bits + 1)  # operating_parameters_info
            if initial_display_delay and reader.read_flag():
                reader.skip_bits(4)  # initial_display_delay_minus_1
    width_bits = reader.read_bits(4) + 1
    height_bits = reader.read_bits(4) + 1
    width = reader.read_bits(width_bits) + 1
    height = reader.read_bits(height_bits) + 1
    return profile, level, width, height


def _describe_av1(fourcc: str, record: bytes) -> VideoConfig:
    # An Mpeg2TsSequenceStart carries the TS av1_video_descriptor: tag 0x80 and a
    # length byte, then the same first four bytes as av1C and no OBUs.
    if record[:1] == b"\x80" and record[2:3] == b"\x81":
        record = record[2:6]
    reader = _BitReader(record, "av1C")
    if reader.read_bits(8) != 0x81:
        raise CodecError("av1C: unknown marker or version")
    profile = reader.read_bits(3)
    level = reader.read_bits(5)
    reader.skip_bits(1)  # seq_tier_0
    high_bitdepth, twelve_bit, monochrome = (reader.read_flag() for _ in range(3))
    subsampling = reader.read_bits(2)  # chroma_subsampling_x, chroma_subsampling_y
    reader.skip_bits(2 + 8)  # chroma_sample_position, initial_presentation_delay
    width = height = None
    payload = _av1_sequence_header(record[4:])
    if payload is not None:
        profile, level, width, height = _parse_av1_sequence_header(payload)
    if monochrome:
        chroma: str | None = "4:0:0"
    else:
        chroma = {3: "4:2:0", 2: "4:2:2", 0: "4:4:4"}.get(subsampling)
    return VideoConfig(
        fourcc,
        "AV1",
        profile,
        _AV1_PROFILES.get(profile),
        _av1_level(level),
        width,
        height,
        (12 if twelve_bit else 10) if high_bitdepth else 8,
        chroma,
    )


# VP8 / VP9 --------------------------------------------------------------------------

_VP_CHROMA = {0: "4:2:0", 1: "4:2:0", 2: "4:2:2", 3: "4:4:4"}


def _describe_vp(fourcc: str, record: bytes) -> VideoConfig:
    """VPCodecConfigurationRecord; the record has no picture size."""
    # FFmpeg sends the whole vpcC box payload, FullBox version 1 and flags first; a
    # bare record cannot start like that, since its bitDepth would be 0.
    if record[:4] == b"\x01\x00\x00\x00":
        record = record[4:]
    reader = _BitReader(record, "vpcC")
    profile, level = reader.read_bits(8), reader.read_bits(8)
    bit_depth = reader.read_bits(4)
    chroma = reader.read_bits(3)
    reader.skip_bits(1 + 24 + 16)  # full range, colour description, codec init size
    if bit_depth not in (8, 10, 12):
        raise CodecError("vpcC: bit depth out of range")
    return VideoConfig(
        fourcc,
        "VP9" if fourcc == "vp09" else "VP8",
        profile,
        f"Profile {profile}",
        level / 10 if level else None,
        bit_depth=bit_depth,
        chroma_format=_VP_CHROMA.get(chroma),
    )


# VVC --------------------------------------------------------------------------------

_VVC_PROFILES = {
    1: "Main 10",
    2: "Main 12",
    10: "Main 12 Intra",
    17: "Multilayer Main 10",
    33: "Main 10 4:4:4",
    34: "Main 12 4:4:4",
    35: "Main 16 4:4:4",
    42: "Main 12 4:4:4 Intra",
    43: "Main 16 4:4:4 Intra",
    49: "Multilayer Main 10 4:4:4",
    65: "Main 10 Still Picture",
    66: "Main 12 Still Picture",
    81: "Multilayer Main 10 Still Picture",
    97: "Main 10 4:4:4 Still Picture",
    98: "Main 12 4:4:4 Still Picture",
    99: "Main 16 4:4:4 Still Picture",
    113: "Multilayer Main 10 4:4:4 Still Picture",
}


def _vvc_level(level_idc: int) -> float | None:
    """general_level_idc is 16 * major + 3 * minor (4.1 is 67; 15.5, 255, is unconstrained)."""
    return level_idc // 16 + level_idc % 16 // 3 / 10 if level_idc else None


def _describe_vvc(fourcc: str, record: bytes) -> VideoConfig:
    """The vvcC's own fields (ISO/IEC 14496-15 11.2.4.2); the SPS inside is not parsed.

    The size is the record's max_picture_width/height: the coded size, before any
    conformance window cropping.
    """
    # A bare record starts with five reserved 1 bits; a leading zero version/flags
    # word means the sender included the FullBox header.
    if record[:4] == b"\x00\x00\x00\x00":
        record = record[4:]
    reader = _BitReader(record, "vvcC")
    if not reader.read_bits(8) & 1:  # ptl_present_flag
        return VideoConfig(fourcc, "VVC")
    reader.skip_bits(9)  # ols_idx
    sub_layers = reader.read_bits(3)
    reader.skip_bits(2)  # constant_frame_rate
    chroma_format_idc = reader.read_bits(2)
    bit_depth = 8 + reader.read_bits(3)
    reader.skip_bits(5 + 2)  # reserved
    constraint_bytes = reader.read_bits(6)
    profile = reader.read_bits(7)
    reader.skip_bits(1)  # general_tier_flag
    level_idc = reader.read_bits(8)
    reader.skip_bits(8 * constraint_bytes)  # frame-only, multilayer, constraint info
    if sub_layers > 1:
        present = [reader.read_flag() for _ in range(sub_layers - 1)]
        reader.skip_bits(9 - sub_layers)  # ptl_reserved_zero_bit
        reader.skip_bits(8 * sum(present))  # sublayer_level_idc
    reader.skip_bits(32 * reader.read_bits(8))  # general_sub_profile_idc
    width, height = reader.read_bits(16), reader.read_bits(16)
    return VideoConfig(
        fourcc,
        "VVC",
        profile,
        _VVC_PROFILES.get(profile),
        _vvc_level(level_idc),
        width or None,
        height or None,
        bit_depth,
        _CHROMA_FORMATS[chroma_format_idc],
    )


_VIDEO: dict[str, Callable[[str, bytes], VideoConfig]] = {
    "avc1": _describe_avc,
    "hvc1": _describe_hevc,
    "av01": _describe_av1,
    "vp09": _describe_vp,
    "vp08": _describe_vp,
    "vvc1": _describe_vvc,
}


def describe_video(fourcc: str, record: bytes) -> VideoConfig:
    """Describe a video sequence start's record; an unknown FourCC gives only the codec."""
    describe = _VIDEO.get(fourcc)
    return VideoConfig(fourcc) if describe is None else describe(fourcc, record)


# AAC --------------------------------------------------------------------------------

_AAC_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)
# channelConfiguration -> channels (ISO/IEC 14496-3 1.6.3.4); 0 defers to a PCE.
_AAC_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}
_AAC_OBJECT_TYPES = {
    1: "AAC Main",
    2: "AAC-LC",
    3: "AAC SSR",
    4: "AAC LTP",
    5: "HE-AAC (SBR)",
    6: "AAC Scalable",
    17: "ER AAC-LC",
    19: "ER AAC LTP",
    20: "ER AAC Scalable",
    22: "ER BSAC",
    23: "AAC-LD",
    29: "HE-AACv2 (PS)",
    32: "MPEG-1/2 Layer 1",
    33: "MPEG-1/2 Layer 2",
    34: "MPEG-1/2 Layer 3",
    36: "ALS",
    39: "AAC-ELD",
    42: "USAC",
}
# Object types whose GASpecificConfig can be followed by backward-compatible SBR/PS
# signalling (the ER types put an epConfig in between; not worth parsing).
_AAC_GA_TYPES = frozenset((1, 2, 3, 4, 6, 7))
_SBR, _PS, _BSAC = 5, 29, 22
_SYNC_SBR, _SYNC_PS = 0x2B7, 0x548


def _aac_object_type(reader: _BitReader) -> int:
    object_type = reader.read_bits(5)
    return 32 + reader.read_bits(6) if object_type == 31 else object_type


def _aac_rate(reader: _BitReader) -> int:
    index = reader.read_bits(4)
    if index == 15:
        rate = reader.read_bits(24)
        if not rate:
            raise CodecError("AudioSpecificConfig: sampling frequency of 0")
        return rate
    if index >= len(_AAC_RATES):
        raise CodecError("AudioSpecificConfig: reserved sampling frequency index")
    return _AAC_RATES[index]


def _describe_aac(fourcc: str, record: bytes) -> AudioConfig:
    """AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1), including SBR/PS signalling."""
    reader = _BitReader(record, "AudioSpecificConfig")
    object_type = _aac_object_type(reader)
    if not object_type:  # the null object; also what a stray MultichannelConfig body reads as
        raise CodecError("AudioSpecificConfig: object type 0")
    rate = _aac_rate(reader)
    channel_config = reader.read_bits(4)
    sbr = ps = False
    if object_type in (_SBR, _PS):  # explicit, hierarchical signalling
        sbr, ps = True, object_type == _PS
        rate = _aac_rate(reader)  # extensionSamplingFrequency: the output rate
        object_type = _aac_object_type(reader)
        if object_type == _BSAC:
            reader.skip_bits(4)  # extensionChannelConfiguration
    elif object_type in _AAC_GA_TYPES and channel_config:
        reader.skip_bits(1)  # frameLengthFlag
        if reader.read_flag():  # dependsOnCoreCoder
            reader.skip_bits(14)
        extension = reader.read_flag()
        if object_type == 6:
            reader.skip_bits(3)  # layerNr
        if extension:
            reader.skip_bits(1)  # extensionFlag3
        # Backward-compatible signalling: a sync extension after the core config.
        if (
            reader.remaining() >= 16
            and reader.read_bits(11) == _SYNC_SBR
            and _aac_object_type(reader) == _SBR
            and reader.read_flag()  # sbrPresentFlag
        ):
            sbr = True
            rate = _aac_rate(reader)
            if reader.remaining() >= 12 and reader.read_bits(11) == _SYNC_PS:
                ps = reader.read_flag()
    if ps:
        profile_name: str | None = _AAC_OBJECT_TYPES[_PS]
    elif sbr:
        profile_name = _AAC_OBJECT_TYPES[_SBR]
    else:
        profile_name = _AAC_OBJECT_TYPES.get(object_type, f"object type {object_type}")
    channels = 2 if ps else _AAC_CHANNELS.get(channel_config)
    return AudioConfig(fourcc, "AAC", profile_name, rate, channels)


# Opus and FLAC ----------------------------------------------------------------------

_OPUS_RATE = 48000


def _describe_opus(fourcc: str, record: bytes) -> AudioConfig:
    """OpusHead (RFC 7845 5.1); E-RTMP also allows the comment header, which says nothing."""
    if record.startswith(b"OpusTags"):
        return AudioConfig(fourcc, "Opus", sample_rate=_OPUS_RATE)
    if not record.startswith(b"OpusHead"):
        raise CodecError("Opus: not an OpusHead")
    if len(record) < 19:
        raise CodecError("OpusHead truncated")
    if record[8] >> 4:
        raise CodecError("OpusHead: incompatible version")
    channels = record[9]
    if not channels:
        raise CodecError("OpusHead: no channels")
    if record[18] and len(record) < 21 + channels:
        raise CodecError("OpusHead channel mapping table truncated")
    input_rate = int.from_bytes(record[12:16], "little")
    return AudioConfig(
        fourcc,
        "Opus",
        None,
        _OPUS_RATE,
        channels,
        input_rate or None,
        int.from_bytes(record[10:12], "little"),
    )


_FLAC_STREAMINFO_SIZE = 34


def _describe_flac(fourcc: str, record: bytes) -> AudioConfig:
    """STREAMINFO, bare or behind the "fLaC" marker and/or its metadata block header."""
    if record.startswith(b"fLaC"):
        record = record[4:]
    # A metadata block header: type 0 (STREAMINFO, top bit = last block), length 34.
    if len(record) >= 4 + _FLAC_STREAMINFO_SIZE and record[0] & 0x7F == 0:
        record = record[4:] if record[1:4] == b"\x00\x00\x22" else record
    if len(record) < _FLAC_STREAMINFO_SIZE:
        raise CodecError("FLAC STREAMINFO truncated")
    rate = int.from_bytes(record[10:13], "big") >> 4
    if not rate:
        raise CodecError("FLAC STREAMINFO: sample rate of 0")
    return AudioConfig(fourcc, "FLAC", None, rate, (record[12] >> 1 & 7) + 1)


_AUDIO: dict[str, Callable[[str, bytes], AudioConfig]] = {
    "mp4a": _describe_aac,
    "Opus": _describe_opus,
    "fLaC": _describe_flac,
}
# E-RTMP defines no sequence start for these: the frames describe themselves.
_AUDIO_NAMES = {"ac-3": "AC-3", "ec-3": "E-AC-3", ".mp3": "MP3"}


def describe_audio(fourcc: str, record: bytes) -> AudioConfig:
    """Describe an audio sequence start's record; an unknown FourCC gives only the codec.

    Not for MULTICHANNEL_CONFIG bodies: those go to `flv.parse_multichannel_config`.
    """
    describe = _AUDIO.get(fourcc)
    if describe is not None:
        return describe(fourcc, record)
    return AudioConfig(fourcc, _AUDIO_NAMES.get(fourcc))
