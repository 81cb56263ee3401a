"""The publishing side of an RTMP connection, sans-IO.

stream-sync's own publisher: the tests drive the server with it byte for byte, the
benchmark's load generator and the relay (pushing to other platforms) build on it.
It speaks like FFmpeg: digest or plain handshake, connect, releaseStream, FCPublish,
createStream, publish, then media; FCUnpublish and deleteStream to finish.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import amf0, handshake
from .chunk import ChunkReader, ChunkWriter
from .errors import LocalProtocolError, ProtocolError
from .messages import (
    CSID_COMMAND,
    CSID_PROTOCOL,
    MessageType,
    StatusCode,
    UserControlEvent,
)
from .messages import command as command_payload
from .messages import set_chunk_size as chunk_size_payload
from .messages import user_control as user_control_payload

CSID_PUBLISH = 8
CSID_DATA = 4
CSID_AUDIO = 4
CSID_VIDEO = 6


@dataclass(frozen=True, slots=True)
class ClientEvent:
    pass


@dataclass(frozen=True, slots=True)
class Connected(ClientEvent):
    properties: dict[str, Any]
    info: dict[str, Any]
    server_digest_valid: bool | None  # None when we sent a plain handshake


@dataclass(frozen=True, slots=True)
class ConnectRefused(ClientEvent):
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PublishStarted(ClientEvent):
    stream_id: int


@dataclass(frozen=True, slots=True)
class StatusReceived(ClientEvent):
    """Any other onStatus: refusals, Unpublish.Success, server-side stops, reconnect requests."""

    stream_id: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def code(self) -> str:
        code = self.info.get("code")
        return code if isinstance(code, str) else ""

    @property
    def level(self) -> str:
        level = self.info.get("level")
        return level if isinstance(level, str) else ""


class ClientState(StrEnum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    PUBLISHING = "publishing"
    CLOSED = "closed"


class ClientConnection:
    def __init__(
        self,
        *,
        app: str,
        tc_url: str,
        now: float,
        digest: bool = True,
        chunk_size: int = 4096,
        connect_properties: dict[str, Any] | None = None,
        epoch_ms: int = 0,
        random_bytes: Callable[[int], bytes] = os.urandom,
        buffer_size: int = 64 * 1024,
    ) -> None:
        self.state = ClientState.HANDSHAKE
        self.stream_id = 0
        self.created_at = now
        self._app = app
        self._tc_url = tc_url
        self._digest = digest
        self._chunk_size = chunk_size
        self._connect_properties = connect_properties or {}
        self._random_bytes = random_bytes
        self._server_digest_valid: bool | None = None
        self._publish_name = ""
        self._publish_type = "live"
        self._transaction = 1.0
        self._create_stream_txn = -1.0
        self._reader = ChunkReader(
            self._on_message,
            buffer_size=buffer_size,
            max_chunk_streams=64,
            max_message_size=16 * 1024 * 1024,
            max_control_size=1024 * 1024,
        )
        self._writer = ChunkWriter()
        self._out = bytearray()
        self._events: list[ClientEvent] = []
        hello = handshake.client_hello(digest=digest, epoch_ms=epoch_ms, random_bytes=random_bytes)
        self._c1_digest = hello.digest
        self._out += hello.c0c1

    # I/O ---------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def take_output(self) -> bytearray:
        """What data_to_send gives, without its copy: the buffer itself, replaced."""
        out, self._out = self._out, bytearray()
        return out

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ClientEvent]:
        view = memoryview(data)
        while view:
            space = self._reader.get_buffer()
            if not space:
                raise ProtocolError("server sent more than the client can buffer")
            n = min(len(space), len(view))
            space[:n] = view[:n]
            view = view[n:]
            self._reader.end += n
            self._advance()
        events, self._events = self._events, []
        return events

    def _advance(self) -> None:
        if self.state is ClientState.HANDSHAKE:
            reply = self._reader.take(1 + 2 * handshake.HANDSHAKE_SIZE)
            if reply is None:
                return
            if reply[0] != handshake.RTMP_VERSION:
                raise ProtocolError(f"server answered with RTMP version {reply[0]}")
            s1 = reply[1 : 1 + handshake.HANDSHAKE_SIZE]
            s2 = reply[1 + handshake.HANDSHAKE_SIZE :]
            if self._c1_digest is not None:
                self._server_digest_valid = handshake.verify_server_reply(s1, s2, self._c1_digest)
            self._out += handshake.client_c2(
                s1, digest=self._digest, random_bytes=self._random_bytes
            )
            if self._chunk_size != 128:
                self._send(
                    CSID_PROTOCOL,
                    MessageType.SET_CHUNK_SIZE,
                    0,
                    0,
                    chunk_size_payload(self._chunk_size),
                )
                self._writer.chunk_size = self._chunk_size
            properties = {
                "app": self._app,
                "type": "nonprivate",
                "flashVer": "FMLE/3.0 (compatible; stream-sync)",
                "tcUrl": self._tc_url,
                **self._connect_properties,
            }
            self._send_command(0, command_payload("connect", self._next_txn(), properties))
            self.state = ClientState.CONNECTING
        self._reader.parse()

    # Commands ----------------------------------------------------------------------

    def publish(self, name: str, publish_type: str = "live") -> None:
        """Ask to publish; PublishStarted or StatusReceived (a refusal) follows."""
        if self.state is not ClientState.CONNECTED:
            raise LocalProtocolError(f"cannot publish in state {self.state}")
        self._publish_name = name
        self._publish_type = publish_type
        self._send_command(0, command_payload("releaseStream", self._next_txn(), None, name))
        self._send_command(0, command_payload("FCPublish", self._next_txn(), None, name))
        self._create_stream_txn = self._next_txn()
        self._send_command(0, command_payload("createStream", self._create_stream_txn, None))

    def unpublish(self) -> None:
        if self.state is not ClientState.PUBLISHING:
            raise LocalProtocolError(f"cannot unpublish in state {self.state}")
        self._send_command(
            0, command_payload("FCUnpublish", self._next_txn(), None, self._publish_name)
        )
        self._send_command(
            0, command_payload("deleteStream", self._next_txn(), None, float(self.stream_id))
        )
        self.state = ClientState.CONNECTED

    def send_metadata(self, metadata: dict[str, Any], timestamp: int = 0) -> None:
        payload = amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(metadata))
        self._send(CSID_DATA, MessageType.DATA_AMF0, self.stream_id, timestamp, payload)

    def send_video(self, timestamp: int, payload: bytes | bytearray | memoryview) -> None:
        self._send(CSID_VIDEO, MessageType.VIDEO, self.stream_id, timestamp, payload)

    def send_audio(self, timestamp: int, payload: bytes | bytearray | memoryview) -> None:
        self._send(CSID_AUDIO, MessageType.AUDIO, self.stream_id, timestamp, payload)

    def send_message(
        self, csid: int, type_id: int, msid: int, timestamp: int, payload: bytes
    ) -> None:
        """Anything at all, for tests that need the server to see odd messages."""
        self._send(csid, type_id, msid, timestamp, payload)

    def ping(self, value: int) -> None:
        payload = user_control_payload(UserControlEvent.PING_REQUEST, value)
        self._send(CSID_PROTOCOL, MessageType.USER_CONTROL, 0, 0, payload)

    def _next_txn(self) -> float:
        txn = self._transaction
        self._transaction += 1
        return txn

    def _send(
        self,
        csid: int,
        type_id: int,
        msid: int,
        timestamp: int,
        payload: bytes | bytearray | memoryview,
    ) -> None:
        self._writer.write(self._out, csid, type_id, msid, timestamp, payload)

    def _send_command(self, msid: int, payload: bytes) -> None:
        csid = CSID_PUBLISH if msid else CSID_COMMAND
        self._send(csid, MessageType.COMMAND_AMF0, msid, 0, payload)

    # Replies -----------------------------------------------------------------------

    def _on_message(self, type_id: int, msid: int, timestamp: int, body: bytearray) -> None:
        if type_id == MessageType.SET_CHUNK_SIZE:
            if len(body) < 4:
                raise ProtocolError("Set Chunk Size message shorter than 4 bytes")
            size = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
            if size < 1:
                raise ProtocolError("server announced a chunk size of 0")
            self._reader.chunk_size = size
        elif type_id == MessageType.COMMAND_AMF0:
            self._on_command(msid, amf0.decode_all(body))

    def _on_command(self, msid: int, values: list[Any]) -> None:
        if len(values) < 2 or not isinstance(values[0], str):
            raise ProtocolError("command message without a name and a transaction id")
        name, txn = values[0], values[1]
        info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
        if self.state is ClientState.CONNECTING and txn == 1.0 and name in ("_result", "_error"):
            if name == "_result":
                properties = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
                self.state = ClientState.CONNECTED
                self._events.append(Connected(properties, info, self._server_digest_valid))
            else:
                self.state = ClientState.CLOSED
                self._events.append(ConnectRefused(info))
        elif name == "_result" and txn == self._create_stream_txn:
            stream_id = values[3] if len(values) > 3 else None
            if not isinstance(stream_id, float) or not 0 <= stream_id <= 0xFFFFFFFF:
                raise ProtocolError("createStream answered without a stream id")
            self.stream_id = int(stream_id)
            args = (None, self._publish_name, self._publish_type)
            self._send_command(self.stream_id, command_payload("publish", self._next_txn(), *args))
        elif name == "onStatus":
            if info.get("code") == StatusCode.PUBLISH_START:
                self.state = ClientState.PUBLISHING
                self._events.append(PublishStarted(msid))
            else:
                self._events.append(StatusReceived(msid, info))
