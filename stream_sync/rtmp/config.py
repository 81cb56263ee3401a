"""Limits and choices of the protocol core; the application maps its settings onto these."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag


class CapsEx(IntFlag):
    """Enhanced RTMP extended capabilities (connect's capsEx)."""

    RECONNECT = 0x01
    MULTITRACK = 0x02
    MOD_EX = 0x04
    TIMESTAMP_NANO_OFFSET = 0x08


class FourCcInfo(IntFlag):
    CAN_DECODE = 0x01
    CAN_ENCODE = 0x02
    CAN_FORWARD = 0x04


@dataclass(frozen=True, slots=True)
class RtmpConfig:
    read_buffer_size: int = 64 * 1024
    max_message_size: int = 8 * 1024 * 1024  # media; RTMP's own ceiling is 16 MiB
    max_control_size: int = 64 * 1024  # commands, data, control messages
    max_chunk_streams: int = 64  # real clients use 3 to 6
    min_chunk_size: int = 128  # smaller chunks only multiply parsing cost
    max_chunk_size: int = 65536
    out_chunk_size: int = 4096
    window_ack_size: int = 2_500_000
    peer_bandwidth: int = 2_500_000
    handshake_timeout: float = 5.0
    idle_timeout: float = 30.0
    publish_timeout: float = 15.0  # from TCP accept to the first publish command
    max_streams: int = 4  # createStream calls per connection
    video_fourccs: tuple[str, ...] = ("avc1", "hvc1", "av01", "vp09", "vp08", "vvc1")
    audio_fourccs: tuple[str, ...] = ("mp4a", "Opus", "fLaC", "ac-3", "ec-3", ".mp3")
    caps_ex: CapsEx = CapsEx.RECONNECT | CapsEx.MULTITRACK | CapsEx.MOD_EX

    def __post_init__(self) -> None:
        if not 128 <= self.min_chunk_size <= self.max_chunk_size <= 0x7FFFFFFF:
            raise ValueError("chunk size limits must satisfy 128 <= min <= max")
        if not 128 <= self.out_chunk_size <= 0xFFFFFF:
            raise ValueError("the outgoing chunk size must be between 128 and 16777215")
        if self.read_buffer_size < 4096:
            raise ValueError("the read buffer must be at least 4096 bytes")
        if self.max_control_size < 1024 or self.max_message_size < self.max_control_size:
            raise ValueError("message size limits are too small")
        if self.max_chunk_streams < 4 or self.max_streams < 1:
            raise ValueError("at least 4 chunk streams and 1 message stream are needed")
        if min(self.handshake_timeout, self.idle_timeout, self.publish_timeout) <= 0:
            raise ValueError("timeouts must be positive")
