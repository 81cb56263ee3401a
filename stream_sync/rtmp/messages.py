"""RTMP message types, protocol control messages and status codes."""

from __future__ import annotations

import struct
from enum import IntEnum, StrEnum
from typing import Any

from . import amf0

_U32 = struct.Struct(">I")
_U16_U32 = struct.Struct(">HI")


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


class UserControlEvent(IntEnum):
    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


class PeerBandwidthLimit(IntEnum):
    HARD = 0
    SOFT = 1
    DYNAMIC = 2


class StatusCode(StrEnum):
    CONNECT_SUCCESS = "NetConnection.Connect.Success"
    CONNECT_REJECTED = "NetConnection.Connect.Rejected"
    CONNECT_CLOSED = "NetConnection.Connect.Closed"
    RECONNECT_REQUEST = "NetConnection.Connect.ReconnectRequest"
    CALL_FAILED = "NetConnection.Call.Failed"
    PUBLISH_START = "NetStream.Publish.Start"
    PUBLISH_BAD_NAME = "NetStream.Publish.BadName"
    UNPUBLISH_SUCCESS = "NetStream.Unpublish.Success"
    PLAY_FAILED = "NetStream.Play.Failed"


# Chunk stream ids we send on, as nginx-rtmp and most servers use them.
CSID_PROTOCOL = 2
CSID_COMMAND = 3
CSID_STATUS = 5

# Protocol control messages: small payloads, always on csid 2 and message stream 0.


def set_chunk_size(size: int) -> bytes:
    return _U32.pack(size & 0x7FFFFFFF)


def abort(csid: int) -> bytes:
    return _U32.pack(csid)


def acknowledgement(sequence_number: int) -> bytes:
    return _U32.pack(sequence_number & 0xFFFFFFFF)


def window_ack_size(size: int) -> bytes:
    return _U32.pack(size)


def set_peer_bandwidth(size: int, limit: PeerBandwidthLimit) -> bytes:
    return _U32.pack(size) + bytes((limit,))


def user_control(event: UserControlEvent, value: int) -> bytes:
    return _U16_U32.pack(event, value & 0xFFFFFFFF)


def status_info(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"level": level, "code": code, "description": description, **extra}


def command(name: str, transaction_id: float, *args: Any) -> bytes:
    return amf0.encode(name, transaction_id, *args)


def on_status(level: str, code: str, description: str, **extra: Any) -> bytes:
    """An onStatus command (transaction 0, null command object) for a stream."""
    return amf0.encode("onStatus", 0, None, status_info(level, code, description, **extra))
