"""The server side of one RTMP connection, as a sans-IO state machine.

Bytes in (`buffer_updated` after writing into `get_buffer()`, or `receive_data`),
events out, bytes to send from `data_to_send()`; the clock is an argument. The
core answers everything the protocol dictates (handshake, chunk sizes,
acknowledgements, pings, createStream, deleteStream) and leaves every decision to
the application: a `ConnectRequested` or `PublishRequested` pauses parsing until
the application calls `accept_*` or `reject_*`. That keeps pipelined commands in
order (OBS sends releaseStream/FCPublish/createStream without waiting) and lets the
socket layer apply back-pressure while an admission check is in flight.

Refusals end the conversation: after `reject_*` or `end_publish` the connection is
`closing` and ignores further input, because librtmp and OBS ignore error replies
and would otherwise wait forever. The application closes the socket once the
reply is flushed.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from . import amf0, flv, handshake
from .chunk import ChunkReader, ChunkWriter
from .config import FourCcInfo, RtmpConfig
from .counters import MediaCounters
from .errors import (
    HandshakeTimeoutError,
    IdleTimeoutError,
    LocalProtocolError,
    ProtocolError,
    PublishTimeoutError,
)
from .events import (
    CodecConfigured,
    CommandIgnored,
    ConnectRequested,
    Event,
    HandshakeCompleted,
    KeyframeCaptured,
    MediaReceived,
    MetadataReceived,
    PublishRequested,
    PublishStopped,
)
from .messages import (
    CSID_COMMAND,
    CSID_PROTOCOL,
    CSID_STATUS,
    MessageType,
    PeerBandwidthLimit,
    StatusCode,
    UserControlEvent,
    status_info,
)
from .messages import acknowledgement as ack_payload
from .messages import command as command_payload
from .messages import on_status as on_status_payload
from .messages import set_chunk_size as chunk_size_payload
from .messages import set_peer_bandwidth as peer_bandwidth_payload
from .messages import user_control as user_control_payload
from .messages import window_ack_size as window_payload

_U32 = struct.Struct(">I")
_NO_EVENTS: list[Event] = []
FMS_VERSION = "FMS/3,0,1,123"
FMS_CAPABILITIES = 31


# Until a publish is accepted a peer sends only the handshake and a few commands, so
# it gets a small read buffer: thousands of idle or hostile connections cost 4 KiB
# each, not the full read buffer a live stream needs.
FIRST_BUFFER_SIZE = 4096


class State(StrEnum):
    HANDSHAKE = "handshake"  # waiting for C0+C1
    HANDSHAKE_ACK = "handshake_ack"  # waiting for C2
    CONNECTING = "connecting"  # waiting for connect
    CONNECT_PENDING = "connect_pending"  # the application is deciding
    CONNECTED = "connected"
    CLOSING = "closing"  # refused or ended; input is ignored


class StreamState(StrEnum):
    CREATED = "created"
    PUBLISH_PENDING = "publish_pending"
    PUBLISHING = "publishing"


class ServerConnection:
    def __init__(
        self,
        config: RtmpConfig,
        *,
        now: float,
        epoch_ms: int = 0,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.config = config
        self.state = State.HANDSHAKE
        self.created_at = now
        # Until the first publish, a connection only costs us: a peer that dawdles
        # through connect and createStream is dropped after config.publish_timeout.
        self.publish_requested = False
        self.last_received_at = now
        self.bytes_received = 0
        self.digest_scheme: int | None = None
        self.app = ""
        self.streams: dict[int, StreamState] = {}
        self.publishing_stream_id: int | None = None
        self._epoch_ms = epoch_ms
        self._random_bytes = random_bytes
        self._reader = ChunkReader(
            self._on_message,
            buffer_size=min(config.read_buffer_size, FIRST_BUFFER_SIZE),
            max_chunk_streams=config.max_chunk_streams,
            max_message_size=config.max_message_size,
            max_control_size=config.max_control_size,
        )
        self._writer = ChunkWriter()
        self._out = bytearray()
        self._events: list[Event] = []
        self._backlog = bytearray()  # receive_data() input that arrived while paused and full
        self._connect_transaction = 0.0
        self._next_stream_id = 1
        self._peer_window = 0  # the peer's Window Acknowledgement Size; 0 = never set
        self._acked = 0
        self._client_enhanced = False  # the client started an Enhanced RTMP negotiation
        self._client_fourccs: tuple[str, ...] = ()

    # Introspection -----------------------------------------------------------------

    @property
    def counters(self) -> MediaCounters:
        return self._reader.counters

    @property
    def closing(self) -> bool:
        return self.state is State.CLOSING

    @property
    def collect_media(self) -> bool:
        return self._reader.collect_media

    @collect_media.setter
    def collect_media(self, value: bool) -> None:
        self._reader.collect_media = value

    @property
    def capture_keyframe(self) -> bool:
        """Set to get the next video keyframe as one KeyframeCaptured; clears itself.

        Only that message is copied: the others stay on the hot path.
        """
        return self._reader.capture_keyframe

    @capture_keyframe.setter
    def capture_keyframe(self, value: bool) -> None:
        self._reader.capture_keyframe = value

    @property
    def has_output(self) -> bool:
        """Whether data_to_send() has anything (cheaper than asking it for nothing)."""
        return bool(self._out)

    @property
    def awaiting_decision(self) -> bool:
        return self._reader.paused and self.state is not State.CLOSING

    def buffered_bytes(self) -> int:
        """Every byte held for this peer: the read buffer, partial messages, backlog."""
        return len(self._reader.buf) + self._reader.buffered_message_bytes() + len(self._backlog)

    def deadline(self) -> float:
        """When handle_timer() must next run."""
        config = self.config
        idle = self.last_received_at + config.idle_timeout
        if self.state in (State.HANDSHAKE, State.HANDSHAKE_ACK):
            return min(self.created_at + config.handshake_timeout, idle)
        if not self.publish_requested:
            return min(self.created_at + config.publish_timeout, idle)
        return idle

    # Input -------------------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Where the socket layer writes received bytes; empty means stop reading."""
        return self._reader.get_buffer()

    def buffer_updated(self, nbytes: int, now: float) -> list[Event]:
        """nbytes were written at the start of get_buffer()'s view."""
        self._reader.end += nbytes
        self.bytes_received += nbytes
        self.last_received_at = now
        if self.state is State.CLOSING:
            self._reader.start = self._reader.end
            return _NO_EVENTS
        self._advance()
        return self._take_events()

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> list[Event]:
        """Convenience for callers that own their buffers: copies data in."""
        events: list[Event] = []
        view = memoryview(data)
        while view:
            space = None if self._backlog else self.get_buffer()  # never overtake the backlog
            if not space:
                self._backlog += view
                if len(self._backlog) > self.config.read_buffer_size:
                    raise ProtocolError("peer kept sending while a decision was pending")
                break
            n = min(len(space), len(view))
            space[:n] = view[:n]
            view = view[n:]
            events += self.buffer_updated(n, now)
        return events

    def handle_timer(self, now: float) -> None:
        """Raise the timeout error that applies at now, if any."""
        handshaking = self.state in (State.HANDSHAKE, State.HANDSHAKE_ACK)
        if handshaking and now >= self.created_at + self.config.handshake_timeout:
            raise HandshakeTimeoutError(
                f"handshake not completed within {self.config.handshake_timeout:g} s"
            )
        if not self.publish_requested and now >= self.created_at + self.config.publish_timeout:
            raise PublishTimeoutError(f"no publish within {self.config.publish_timeout:g} s")
        if now >= self.last_received_at + self.config.idle_timeout:
            raise IdleTimeoutError(f"nothing received for {self.config.idle_timeout:g} s")

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    # Decisions ---------------------------------------------------------------------

    def accept_connect(self, **extra_properties: Any) -> list[Event]:
        if self.state is not State.CONNECT_PENDING:
            raise LocalProtocolError(f"no connect to accept in state {self.state}")
        config = self.config
        self._send_control(MessageType.WINDOW_ACK_SIZE, window_payload(config.window_ack_size))
        self._send_control(
            MessageType.SET_PEER_BANDWIDTH,
            peer_bandwidth_payload(config.peer_bandwidth, PeerBandwidthLimit.DYNAMIC),
        )
        self._send_control(MessageType.SET_CHUNK_SIZE, chunk_size_payload(config.out_chunk_size))
        self._writer.chunk_size = config.out_chunk_size
        properties: dict[str, Any] = {
            "fmsVer": FMS_VERSION,
            "capabilities": FMS_CAPABILITIES,
            **self._enhanced_properties(),
            **extra_properties,
        }
        info = status_info(
            "status", StatusCode.CONNECT_SUCCESS, "Connection succeeded.", objectEncoding=0
        )
        self._send_command(
            0, command_payload("_result", self._connect_transaction, properties, info)
        )
        self.state = State.CONNECTED
        return self._resume()

    def reject_connect(self, description: str) -> list[Event]:
        if self.state is not State.CONNECT_PENDING:
            raise LocalProtocolError(f"no connect to reject in state {self.state}")
        info = status_info("error", StatusCode.CONNECT_REJECTED, description)
        self._send_command(0, command_payload("_error", self._connect_transaction, None, info))
        self._close()
        return _NO_EVENTS

    def accept_publish(self, stream_id: int) -> list[Event]:
        if self.streams.get(stream_id) is not StreamState.PUBLISH_PENDING:
            raise LocalProtocolError(f"no publish pending on stream {stream_id}")
        self._send_control(
            MessageType.USER_CONTROL,
            user_control_payload(UserControlEvent.STREAM_BEGIN, stream_id),
        )
        self._send_status(stream_id, "status", StatusCode.PUBLISH_START, "Publishing started.")
        self.streams[stream_id] = StreamState.PUBLISHING
        self.publishing_stream_id = stream_id
        self._reader.publishing_msid = stream_id
        self._reader.counters = MediaCounters()
        self._reader.resize(self.config.read_buffer_size)  # media comes: room for it now
        return self._resume()

    def reject_publish(
        self,
        stream_id: int,
        description: str,
        code: str = StatusCode.PUBLISH_BAD_NAME,
    ) -> list[Event]:
        if self.streams.get(stream_id) is not StreamState.PUBLISH_PENDING:
            raise LocalProtocolError(f"no publish pending on stream {stream_id}")
        self._send_status(stream_id, "error", code, description)
        self._close()
        return _NO_EVENTS

    def end_publish(self, description: str, code: str = StatusCode.CONNECT_CLOSED) -> None:
        """Stop a live publish from the server side (key revoked, kicked, shutdown)."""
        if self.publishing_stream_id is not None:
            self._send_status(self.publishing_stream_id, "error", code, description)
        self._close()

    def request_reconnect(self, tc_url: str, description: str) -> None:
        """Enhanced RTMP ReconnectRequest: ask a capable client to reconnect elsewhere."""
        info = status_info("status", StatusCode.RECONNECT_REQUEST, description, tcUrl=tc_url)
        self._send_command(0, command_payload("onStatus", 0, None, info))

    # Parsing -----------------------------------------------------------------------

    def _advance(self) -> None:
        reader = self._reader
        if self.state is State.HANDSHAKE:
            if reader.buffered():
                handshake.check_c0(reader.buf[reader.start])
            c0c1 = reader.take(1 + handshake.HANDSHAKE_SIZE)
            if c0c1 is None:
                return
            reply = handshake.server_reply(
                c0c1, epoch_ms=self._epoch_ms, random_bytes=self._random_bytes
            )
            self.digest_scheme = reply.digest_scheme
            self._out += reply.s0s1s2
            self.state = State.HANDSHAKE_ACK
        if self.state is State.HANDSHAKE_ACK:
            if reader.take(handshake.HANDSHAKE_SIZE) is None:  # C2 need not echo S1
                return
            self.state = State.CONNECTING
            self._events.append(HandshakeCompleted(self.digest_scheme))
        reader.parse()
        if self._peer_window and self.bytes_received - self._acked >= self._peer_window:
            self._acked = self.bytes_received
            self._send_control(MessageType.ACKNOWLEDGEMENT, ack_payload(self.bytes_received))

    def _resume(self) -> list[Event]:
        self._reader.paused = False
        self._advance()
        # The read buffer was full when the backlog began: parse, then refill, until the
        # backlog is gone or another decision pauses parsing again.
        while self._backlog and not self._reader.paused:
            space = self._reader.get_buffer()
            if not space:  # cannot happen while parsing runs; never spin
                break
            n = min(len(space), len(self._backlog))
            space[:n] = self._backlog[:n]
            del self._backlog[:n]
            self._reader.end += n
            self.bytes_received += n
            self._advance()
        return self._take_events()

    def _take_events(self) -> list[Event]:
        if not self._events:
            return _NO_EVENTS
        events, self._events = self._events, []
        return events

    def _close(self) -> None:
        self.state = State.CLOSING
        self._reader.paused = True
        self._reader.publishing_msid = -1
        self._reader.start = self._reader.end  # input is ignored from now on, buffered too
        self._backlog.clear()

    def _on_message(self, type_id: int, msid: int, timestamp: int, body: bytearray) -> None:
        if type_id == MessageType.COMMAND_AMF0:
            self._on_command(msid, amf0.decode_all(body))
        elif type_id == MessageType.COMMAND_AMF3:
            self._on_command(msid, amf0.decode_all(body, _amf3_wrapper_offset(body)))
        elif type_id == MessageType.DATA_AMF0:
            self._on_data(msid, timestamp, amf0.decode_all(body))
        elif type_id == MessageType.DATA_AMF3:
            self._on_data(msid, timestamp, amf0.decode_all(body, _amf3_wrapper_offset(body)))
        elif type_id in (MessageType.AUDIO, MessageType.VIDEO):
            self._on_media(type_id, msid, timestamp, bytes(body))
        elif type_id == MessageType.SET_CHUNK_SIZE:
            self._on_set_chunk_size(body)
        elif type_id == MessageType.ABORT:
            self._reader.abort(_u32(body, "Abort"))
        elif type_id == MessageType.ACKNOWLEDGEMENT:
            _u32(body, "Acknowledgement")
        elif type_id == MessageType.USER_CONTROL:
            self._on_user_control(body)
        elif type_id == MessageType.WINDOW_ACK_SIZE:
            window = _u32(body, "Window Acknowledgement Size")
            if not window:
                raise ProtocolError("Window Acknowledgement Size of 0")
            self._peer_window = window
        elif type_id == MessageType.SET_PEER_BANDWIDTH:
            if len(body) < 5:
                raise ProtocolError("Set Peer Bandwidth shorter than 5 bytes")
        elif type_id == MessageType.AGGREGATE:
            self._on_aggregate(msid, timestamp, bytes(body))
        elif type_id in (MessageType.SHARED_OBJECT_AMF0, MessageType.SHARED_OBJECT_AMF3):
            self._reader.counters.ignored_messages += 1
        else:
            raise ProtocolError(f"unknown message type {type_id}")

    def _on_set_chunk_size(self, body: bytearray) -> None:
        size = _u32(body, "Set Chunk Size")
        if size & 0x80000000:
            raise ProtocolError("Set Chunk Size with the reserved top bit set")
        if not self.config.min_chunk_size <= size <= self.config.max_chunk_size:
            raise ProtocolError(
                f"chunk size {size} outside the accepted range "
                f"{self.config.min_chunk_size}-{self.config.max_chunk_size}"
            )
        self._reader.chunk_size = size

    def _on_user_control(self, body: bytearray) -> None:
        if len(body) < 2:
            raise ProtocolError("User Control message shorter than 2 bytes")
        event = (body[0] << 8) | body[1]
        if event == UserControlEvent.PING_REQUEST:
            value = _u32(body[2:], "PingRequest")
            self._send_control(
                MessageType.USER_CONTROL,
                user_control_payload(UserControlEvent.PING_RESPONSE, value),
            )

    # Commands ----------------------------------------------------------------------

    def _on_command(self, msid: int, values: list[Any]) -> None:
        if len(values) < 2 or not isinstance(values[0], str):
            raise ProtocolError("command message without a name and a transaction id")
        name, transaction_id = values[0], values[1]
        if not isinstance(transaction_id, float):
            raise ProtocolError(f"command {name[:32]!r} without a numeric transaction id")
        args = values[3:]
        if self.state is State.CONNECTING:
            if name != "connect":
                raise ProtocolError(f"expected connect, got {name[:32]!r}")
            self._on_connect(transaction_id, values[2] if len(values) > 2 else None)
            return
        if name == "connect":
            raise ProtocolError("connect sent twice")
        if name == "createStream":
            self._on_create_stream(transaction_id)
        elif name == "publish":
            self._on_publish(msid, transaction_id, args)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            self._on_stop(msid, name, args)
        elif name in ("releaseStream", "FCPublish", "_result", "_error", "onStatus", "_checkbw"):
            pass  # nginx-rtmp answers none of these either, and every client is fine with it
        elif name in ("play", "play2"):
            self._send_status(
                msid, "error", StatusCode.PLAY_FAILED, "This server only accepts publishing."
            )
            self._events.append(CommandIgnored(name, msid))
            self._close()
        else:
            self._events.append(CommandIgnored(name[:64], msid))
            if transaction_id:
                info = status_info("error", StatusCode.CALL_FAILED, "Method not supported.")
                self._send_command(msid, command_payload("_error", transaction_id, None, info))

    def _on_connect(self, transaction_id: float, command_object: Any) -> None:
        if not isinstance(command_object, dict):
            raise ProtocolError("connect without a command object")
        props: dict[str, Any] = command_object
        fourcc_list = props.get("fourCcList")
        fourccs = tuple(
            str(item) for item in (fourcc_list if isinstance(fourcc_list, list) else [])
        )
        caps_ex = props.get("capsEx")
        encoding = props.get("objectEncoding")
        self._connect_transaction = transaction_id
        self.app = _text(props.get("app"))
        self.state = State.CONNECT_PENDING
        self._reader.paused = True
        self._client_enhanced = bool(
            fourccs
            or caps_ex is not None
            or "videoFourCcInfoMap" in props
            or "audioFourCcInfoMap" in props
        )
        self._client_fourccs = fourccs
        self._events.append(
            ConnectRequested(
                transaction_id=transaction_id,
                app=self.app,
                tc_url=_text(props.get("tcUrl")),
                flash_version=_text(props.get("flashVer")),
                object_encoding=_int(encoding),
                fourcc_list=fourccs,
                caps_ex=_int(caps_ex),
                properties=props,
            )
        )

    def _enhanced_properties(self) -> dict[str, Any]:
        """Our side of the E-RTMP negotiation, only for clients that started one."""
        if not self._client_enhanced:
            return {}
        ours = self.config.video_fourccs + self.config.audio_fourccs
        wanted = self._client_fourccs
        accepted = list(ours) if "*" in wanted else [cc for cc in wanted if cc in ours]
        return {
            "fourCcList": accepted,
            "videoFourCcInfoMap": {
                cc: float(FourCcInfo.CAN_FORWARD) for cc in self.config.video_fourccs
            },
            "audioFourCcInfoMap": {
                cc: float(FourCcInfo.CAN_FORWARD) for cc in self.config.audio_fourccs
            },
            "capsEx": float(self.config.caps_ex),
        }

    def _on_create_stream(self, transaction_id: float) -> None:
        if len(self.streams) >= self.config.max_streams:
            info = status_info("error", StatusCode.CALL_FAILED, "Too many streams.")
            self._send_command(0, command_payload("_error", transaction_id, None, info))
            return
        stream_id = self._next_stream_id
        self._next_stream_id += 1
        self.streams[stream_id] = StreamState.CREATED
        self._send_command(0, command_payload("_result", transaction_id, None, float(stream_id)))

    def _on_publish(self, msid: int, transaction_id: float, args: list[Any]) -> None:
        if msid not in self.streams:
            raise ProtocolError(f"publish on message stream {msid}, which was never created")
        if self.publishing_stream_id is not None:
            self._send_status(
                msid, "error", StatusCode.PUBLISH_BAD_NAME, "This connection is already publishing."
            )
            return
        name = args[0] if args and isinstance(args[0], str) else ""
        publish_type = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
        self.streams[msid] = StreamState.PUBLISH_PENDING
        self.publish_requested = True
        self._reader.paused = True
        self._events.append(PublishRequested(msid, name, publish_type))

    def _on_stop(self, msid: int, name: str, args: list[Any]) -> None:
        target = self.publishing_stream_id
        if name == "deleteStream" and args and isinstance(args[0], float):
            stream_id = _int(args[0], -1)
            if stream_id != target:
                self.streams.pop(stream_id, None)
                return
        elif name == "closeStream" and msid != target:
            return
        if target is None:
            return
        # FCUnpublish names the stream and GStreamer's deleteStream passes the name
        # too; one publish per connection makes either unambiguous.
        self.publishing_stream_id = None
        self._reader.publishing_msid = -1
        if name == "deleteStream":
            del self.streams[target]
        else:
            self.streams[target] = StreamState.CREATED
        self._send_status(target, "status", StatusCode.UNPUBLISH_SUCCESS, "Stopped publishing.")
        self._events.append(PublishStopped(target, name))

    # Data and media ----------------------------------------------------------------

    def _on_data(self, msid: int, timestamp: int, values: list[Any]) -> None:
        if msid != self.publishing_stream_id or not values:
            return
        if values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            self._events.append(MetadataReceived(msid, timestamp, dict(values[1])))

    def _on_media(self, type_id: int, msid: int, timestamp: int, payload: bytes) -> None:
        counters = self._reader.counters
        collected = self._reader.collect_media
        if collected:
            if type_id == MessageType.VIDEO:
                counters.video_messages += 1
                counters.video_bytes += len(payload)
            else:
                counters.audio_messages += 1
                counters.audio_bytes += len(payload)
            self._events.append(MediaReceived(msid, type_id, timestamp, payload))
            # A coded frame is counted from its first two bytes, as the reader's fast
            # path does: parsing each one made an object per frame of every stream
            # with a recording, a push or a viewer.
            if payload:
                b1 = payload[1] if len(payload) > 1 else -1
                if type_id == MessageType.VIDEO:
                    action = flv.classify_video(payload[0], b1)
                    if action == flv.FRAME or (
                        action == flv.KEYFRAME and not self._reader.capture_keyframe
                    ):
                        counters.count_video_frame(timestamp, action == flv.KEYFRAME)
                        return
                else:
                    action = flv.classify_audio(payload[0], b1)
                    if action == flv.FRAME:
                        counters.count_audio_frame(timestamp)
                        return
                if action == flv.IGNORE:
                    return
        media = "video" if type_id == MessageType.VIDEO else "audio"
        try:
            packets = flv.parse_video(payload) if media == "video" else flv.parse_audio(payload)
        except ProtocolError:
            counters.malformed_messages += 1  # a bad tag spoils one frame, not the stream
            return
        for packet in packets:
            kind = packet.kind
            if kind is flv.PacketKind.CODED_FRAMES and packet.track == 0:
                if media == "video":
                    counters.count_video_frame(timestamp, packet.keyframe)
                    if packet.keyframe and self._reader.capture_keyframe:
                        self._reader.capture_keyframe = False
                        self._events.append(KeyframeCaptured(msid, timestamp, packet))
                else:
                    counters.count_audio_frame(timestamp)
            elif kind in (flv.PacketKind.SEQUENCE_START, flv.PacketKind.MULTICHANNEL_CONFIG):
                self._events.append(CodecConfigured(msid, timestamp, media, packet, payload))

    def _on_aggregate(self, msid: int, timestamp: int, body: bytes) -> None:
        """An aggregate message: FLV tags back to back, timestamps relative to the first."""
        if msid != self.publishing_stream_id:
            return
        offset, base = 0, None
        collected = self._reader.collect_media
        counters = self._reader.counters
        while offset + 11 <= len(body):
            tag_type = body[offset]
            size = int.from_bytes(body[offset + 1 : offset + 4], "big")
            tag_ts = int.from_bytes(body[offset + 4 : offset + 7], "big") | (body[offset + 7] << 24)
            start = offset + 11
            if start + size > len(body):
                raise ProtocolError("aggregate message with a truncated tag")
            base = tag_ts if base is None else base
            tag_time = (timestamp + tag_ts - base) & 0xFFFFFFFF
            payload = body[start : start + size]
            if tag_type in (MessageType.AUDIO, MessageType.VIDEO) and payload:
                if not collected:
                    if tag_type == MessageType.VIDEO:
                        counters.video_messages += 1
                        counters.video_bytes += size
                    else:
                        counters.audio_messages += 1
                        counters.audio_bytes += size
                self._on_media(tag_type, msid, tag_time, payload)
            elif tag_type == MessageType.DATA_AMF0:
                self._on_data(msid, tag_time, amf0.decode_all(payload))
            offset = start + size + 4  # skip PreviousTagSize

    # Output ------------------------------------------------------------------------

    def _send_control(self, type_id: int, payload: bytes) -> None:
        self._writer.write(self._out, CSID_PROTOCOL, type_id, 0, 0, payload)

    def _send_command(self, msid: int, payload: bytes) -> None:
        self._writer.write(self._out, CSID_COMMAND, MessageType.COMMAND_AMF0, msid, 0, payload)

    def _send_status(self, stream_id: int, level: str, code: str, description: str) -> None:
        payload = on_status_payload(level, code, description)
        self._writer.write(self._out, CSID_STATUS, MessageType.COMMAND_AMF0, stream_id, 0, payload)


def _u32(body: bytes | bytearray, what: str) -> int:
    if len(body) < 4:
        raise ProtocolError(f"{what} message shorter than 4 bytes")
    value: int = _U32.unpack_from(body)[0]
    return value


def _amf3_wrapper_offset(body: bytearray) -> int:
    """Type 15/17 messages start with a format byte; 0 means AMF0 values follow."""
    if not body or body[0] != 0:
        raise ProtocolError("AMF3 message with an unknown format selector")
    return 1


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int = 0) -> int:
    """An AMF0 number as an int; NaN and infinities (int() raises on them) give default."""
    return int(value) if isinstance(value, float) and math.isfinite(value) else default
