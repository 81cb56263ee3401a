"""ClientConnection: what it sends (like FFmpeg) and how it reads a server's replies."""

from __future__ import annotations

import json

import pytest

from stream_sync.rtmp import amf0
from stream_sync.rtmp.client import (
    ClientConnection,
    ClientState,
    Connected,
    PublishStarted,
    StatusReceived,
)
from stream_sync.rtmp.errors import LocalProtocolError, ProtocolError
from stream_sync.rtmp.events import ConnectRequested, MediaReceived

from .test_chunk import aac, key
from .wire import CAPTURES, HANDSHAKE, T0, Decoder, Pair, Peer, Server, seeded_bytes

FFMPEG = json.loads((CAPTURES / "expected.json").read_text())["ff51-h264-aac"]


def client(**options) -> ClientConnection:
    options = {"digest": False, "random_bytes": seeded_bytes(9), **options}
    return ClientConnection(app="live", tc_url="rtmp://127.0.0.1/live", now=T0, **options)


def test_commands_and_transactions_like_ffmpeg() -> None:
    """The same commands with the same transaction ids as FFmpeg 5.1 in its capture."""
    pair = Pair(auto=True)
    pair.pump()
    pair.client.publish("test-key")
    pair.pump()
    pair.client.unpublish()
    pair.pump()
    sent = Decoder(skip=HANDSHAKE).feed(bytes(pair.upstream))
    commands = [m for m in sent if m.type_id == 20]
    assert [m.name for m in commands] == FFMPEG["commands"]
    assert [m.values[1] for m in commands] == FFMPEG["transactions"]
    assert commands[0].values[2] == {
        "app": "live",
        "type": "nonprivate",
        "flashVer": "FMLE/3.0 (compatible; stream-sync)",
        "tcUrl": "rtmp://127.0.0.1/live",
    }
    release, fcpublish, create, publish = commands[1:5]
    assert release.values[2:] == fcpublish.values[2:] == [None, "test-key"]
    assert create.values[2:] == [None]
    assert (publish.msid, publish.values[2:]) == (1, [None, "test-key", "live"])
    assert commands[5].values[2:] == [None, "test-key"]  # FCUnpublish names the stream
    assert commands[6].values[2:] == [None, 1.0]  # deleteStream of stream 1


def test_client_announces_its_chunk_size_before_connect() -> None:
    conn = client()
    conn.data_to_send()
    server = Server(auto=False)
    server.feed(Peer().handshake()[:1537])
    conn.receive_data(server.conn.data_to_send())
    first = Decoder().feed(conn.data_to_send()[1536:])
    assert [(m.type_id, m.u32) for m in first[:1]] == [(1, 4096)]
    assert first[1].name == "connect"
    plain = client(chunk_size=128)
    plain.data_to_send()
    plain.receive_data(b"\x03" + bytes(3072))
    assert [m.type_id for m in Decoder().feed(plain.data_to_send()[1536:])] == [20]


def test_connect_properties_are_added() -> None:
    pair = Pair(auto=True, connect_properties={"fourCcList": ["hvc1"], "capsEx": 1.0})
    pair.pump()
    (request,) = pair.server.of(ConnectRequested)
    assert (request.fourcc_list, request.caps_ex) == (("hvc1",), 1)
    assert request.properties["flashVer"] == "FMLE/3.0 (compatible; stream-sync)"


def test_media_and_metadata_reach_the_server_byte_exact() -> None:
    pair = Pair(auto=True, collect_media=True, chunk_size=128)
    pair.pump()
    pair.client.publish("k")
    pair.pump()
    frames = [(9, 0, key(1000)), (8, 0, aac(300)), (9, 40, key(129)), (8, 21, aac(128))]
    for type_id, ts, payload in frames:
        (pair.client.send_video if type_id == 9 else pair.client.send_audio)(ts, payload)
    pair.pump()
    media = [(e.message_type, e.timestamp, e.payload) for e in pair.server.of(MediaReceived)]
    assert media == frames


def test_ping_is_answered() -> None:
    pair = Pair(auto=True)
    pair.pump()
    pair.client.ping(0xDEADBEEF)
    pair.pump()
    (pong,) = [m for m in pair.server.replies() if m.type_id == 4]
    assert pong.body == bytes.fromhex("0007 deadbeef")


def test_api_misuse() -> None:
    conn = client()
    with pytest.raises(LocalProtocolError, match="cannot publish in state handshake"):
        conn.publish("k")
    with pytest.raises(LocalProtocolError, match="cannot unpublish in state handshake"):
        conn.unpublish()


def _connected_client() -> tuple[ClientConnection, Peer, Decoder]:
    """A client past connect, the scripted server talking to it, and what the client sent."""
    conn, server, sent = client(), Peer(), Decoder(skip=HANDSHAKE)
    sent.feed(conn.data_to_send())
    conn.receive_data(b"\x03" + bytes(3072))
    conn.receive_data(server.command("_result", 1, {}, {"code": "NetConnection.Connect.Success"}))
    assert conn.state is ClientState.CONNECTED
    return conn, server, sent


def test_server_version_checked() -> None:
    conn = client()
    with pytest.raises(ProtocolError, match="server answered with RTMP version 6"):
        conn.receive_data(b"\x06" + bytes(3072))


def test_short_connect_result_still_connects() -> None:
    conn = client()
    conn.data_to_send()
    events = conn.receive_data(b"\x03" + bytes(3072) + Peer().command("_result", 1))
    assert events == [Connected({}, {}, None)]


@pytest.mark.parametrize("stream_id", [None, "1", float("nan"), float("inf"), -1.0, 2.0**32])
def test_create_stream_result_needs_a_stream_id(stream_id) -> None:
    conn, server, _ = _connected_client()
    conn.publish("k")
    args = [] if stream_id is None else [stream_id]
    with pytest.raises(ProtocolError, match="createStream answered without a stream id"):
        conn.receive_data(server.command("_result", 4, None, *args))


def test_publish_start_and_other_statuses() -> None:
    conn, server, sent = _connected_client()
    conn.publish("k")
    events = conn.receive_data(server.command("_result", 4, None, 7.0))
    assert events == []
    assert conn.stream_id == 7
    status = amf0.encode("onStatus", 0.0, None, {"code": "NetStream.Publish.Start"})
    events = conn.receive_data(server.message(5, 20, 7, 0, status))
    assert events == [PublishStarted(7)]
    assert conn.state is ClientState.PUBLISHING
    commands = [m for m in sent.feed(conn.data_to_send()) if m.type_id == 20]
    assert [(m.name, m.msid) for m in commands][-2:] == [("createStream", 0), ("publish", 7)]
    assert commands[-1].values[3] == "k"
    info = {"code": "NetStream.Publish.Idle", "level": "status"}
    events = conn.receive_data(
        server.message(5, 20, 7, 0, amf0.encode("onStatus", 0.0, None, info))
    )
    assert events == [StatusReceived(7, info)]
    assert (events[0].code, events[0].level) == ("NetStream.Publish.Idle", "status")
    conn.unpublish()
    commands = [m for m in sent.feed(conn.data_to_send()) if m.type_id == 20]
    assert [(m.name, m.values[3]) for m in commands] == [
        ("FCUnpublish", "k"),
        ("deleteStream", 7.0),
    ]
    assert conn.state is ClientState.CONNECTED


def test_only_transaction_1_answers_connect() -> None:
    conn = client()
    conn.data_to_send()
    server = Peer()
    events = conn.receive_data(b"\x03" + bytes(3072) + server.command("_error", 2, None, {}))
    events += conn.receive_data(server.command("_result", 0, None, {}))
    assert events == []
    assert conn.state is ClientState.CONNECTING
    events = conn.receive_data(server.command("_error", 1, None, {"code": "x"}))
    assert [type(e).__name__ for e in events] == ["ConnectRefused"]
    assert conn.state is ClientState.CLOSED


def test_a_zero_chunk_size_from_the_server_is_refused() -> None:
    conn = client()
    conn.data_to_send()
    conn.receive_data(b"\x03" + bytes(3072))
    set_chunk_size_zero = bytes.fromhex("02 000000 000004 01 00000000") + bytes(4)
    with pytest.raises(ProtocolError, match="chunk size of 0"):
        conn.receive_data(set_chunk_size_zero)
