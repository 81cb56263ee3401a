"""ServerConnection command sequences, driven by ClientConnection or by scripted bytes."""

from __future__ import annotations

import pytest

from stream_sync.rtmp import amf0
from stream_sync.rtmp.client import (
    Connected,
    ConnectRefused,
    PublishStarted,
    StatusReceived,
)
from stream_sync.rtmp.config import CapsEx, FourCcInfo, RtmpConfig
from stream_sync.rtmp.connection import State
from stream_sync.rtmp.counters import MediaCounters
from stream_sync.rtmp.errors import LocalProtocolError, ProtocolError
from stream_sync.rtmp.events import (
    CommandIgnored,
    ConnectRequested,
    HandshakeCompleted,
    MediaReceived,
    MetadataReceived,
    PublishRequested,
    PublishStopped,
)

from .test_chunk import aac, inter, key
from .wire import CONFIG, SPLITS, Msg, Pair, Peer, Server, publishing

KEY = "live_8f3b2c1d-secret-stream-key"


def names(messages: list[Msg]) -> list[object]:
    """Commands by name, control messages by type."""
    return [m.name if m.type_id == 20 else m.type_id for m in messages]


# The whole conversation, client and server in memory --------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_publish_conversation(split: str) -> None:
    pair = Pair(split=split)
    pair.pump()
    (request,) = pair.server.of(ConnectRequested)
    assert (request.app, request.tc_url, request.transaction_id) == (
        "live",
        "rtmp://127.0.0.1/live",
        1.0,
    )
    assert (request.fourcc_list, request.caps_ex) == ((), 0)
    assert pair.server.conn.awaiting_decision
    assert pair.client_of(Connected) == []

    pair.server.accept_connect()
    pair.pump()
    (connected,) = pair.client_of(Connected)
    assert connected.properties == {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
    assert connected.info["code"] == "NetConnection.Connect.Success"

    pair.client.publish(KEY)
    pair.pump()
    (publish,) = pair.server.of(PublishRequested)
    assert (publish.stream_id, publish.name, publish.publish_type) == (1, KEY, "live")
    assert KEY not in repr(publish)
    assert pair.client_of(PublishStarted) == []

    pair.server.accept_publish(1)
    pair.pump()
    assert pair.client_of(PublishStarted) == [PublishStarted(1)]
    sent = pair.server.replies()
    assert names(sent) == [5, 6, 1, "_result", "_result", 4, "onStatus"]
    assert sent[2].u32 == CONFIG.out_chunk_size  # the server's Set Chunk Size
    assert sent[4].values == ["_result", 4.0, None, 1.0]  # createStream: stream 1
    assert sent[5].body == bytes.fromhex("0000 00000001")  # StreamBegin 1 ...
    assert sent[6].info["code"] == "NetStream.Publish.Start"  # ... before Publish.Start
    assert (sent[6].msid, sent[5].msid) == (1, 0)

    pair.client.send_metadata({"width": 320.0})
    pair.client.send_video(0, key(5000))  # > the client's 4096-byte chunks
    pair.client.send_audio(0, aac(300))
    pair.client.unpublish()
    pair.pump()
    counters = pair.server.conn.counters
    assert (counters.video_frames, counters.audio_frames) == (1, 1)
    assert counters.video_bytes == 5000
    assert [e.metadata for e in pair.server.of(MetadataReceived)] == [{"width": 320.0}]
    assert pair.server.of(PublishStopped) == [PublishStopped(1, "FCUnpublish")]
    (status,) = pair.client_of(StatusReceived)
    assert status.code == "NetStream.Unpublish.Success"
    assert pair.server.conn.streams == {}  # deleteStream removed it


def test_connect_events_keep_secrets_out_of_repr() -> None:
    peer, server = Peer(), Server(auto=False)
    server.feed(peer.handshake() + peer.connect(tcUrl="rtmp://h/live/" + KEY))
    (request,) = server.of(ConnectRequested)
    assert request.tc_url.endswith(KEY)
    assert KEY not in repr(request)
    server.accept_connect()
    server.feed(peer.command("createStream", 2, None))
    server.feed(peer.command("publish", 3, None, KEY, "live", msid=1, csid=8))
    server.accept_publish(1)
    server.conn.collect_media = True
    server.feed(peer.video(0, key(10) + KEY.encode()))
    assert len(server.of(MediaReceived)) == 1
    assert all(KEY not in repr(event) for event in server.events)


def test_enhanced_rtmp_negotiation() -> None:
    offer = {"fourCcList": ["hvc1", "av01", "zzzz", "Opus"], "capsEx": 15.0}
    pair = Pair(auto=True, connect_properties=offer)
    pair.pump()
    (request,) = pair.server.of(ConnectRequested)
    assert request.fourcc_list == ("hvc1", "av01", "zzzz", "Opus")
    assert request.caps_ex == 15
    (connected,) = pair.client_of(Connected)
    props = connected.properties
    assert props["fourCcList"] == ["hvc1", "av01", "Opus"]  # ours, in the client's order
    forward = float(FourCcInfo.CAN_FORWARD)
    assert props["videoFourCcInfoMap"] == dict.fromkeys(CONFIG.video_fourccs, forward)
    assert props["audioFourCcInfoMap"] == dict.fromkeys(CONFIG.audio_fourccs, forward)
    assert props["capsEx"] == float(CapsEx.RECONNECT | CapsEx.MULTITRACK | CapsEx.MOD_EX)
    assert (props["fmsVer"], props["capabilities"]) == ("FMS/3,0,1,123", 31.0)


def test_enhanced_rtmp_wildcard_and_map_only_offers() -> None:
    pair = Pair(auto=True, connect_properties={"fourCcList": ["*"]})
    pair.pump()
    (connected,) = pair.client_of(Connected)
    assert connected.properties["fourCcList"] == [*CONFIG.video_fourccs, *CONFIG.audio_fourccs]
    pair = Pair(auto=True, connect_properties={"videoFourCcInfoMap": {"hvc1": 1.0}})
    pair.pump()
    (connected,) = pair.client_of(Connected)
    assert connected.properties["fourCcList"] == []
    assert "capsEx" in connected.properties


def test_no_enhanced_properties_without_a_negotiation() -> None:
    pair = Pair(auto=True, connect_properties={"objectEncoding": 0.0})
    pair.pump()
    (connected,) = pair.client_of(Connected)
    for name in ("fourCcList", "videoFourCcInfoMap", "audioFourCcInfoMap", "capsEx"):
        assert name not in connected.properties


def test_accept_connect_extra_properties_and_chunk_size() -> None:
    config = RtmpConfig(out_chunk_size=8192)
    peer, server = Peer(), Server(config, auto=False)
    server.feed(peer.handshake() + peer.connect())
    server.accept_connect(motd="x" * 6000)
    raw = server.flush()
    sent = server.sent
    assert names(sent) == [5, 6, 1, "_result"]
    assert [m.u32 for m in sent[:3]] == [2_500_000, 2_500_000, 8192]
    assert sent[1].body[4] == 2  # dynamic limit
    assert sent[3].values[2]["motd"] == "x" * 6000
    assert sent[3].body in raw  # one chunk: written with the announced chunk size


@pytest.mark.parametrize("split", SPLITS)
def test_reject_publish(split: str) -> None:
    pair = Pair(auto=False, split=split)
    pair.pump()
    pair.server.accept_connect()
    pair.pump()
    pair.client.publish(KEY)
    pair.pump()
    pair.server.reject_publish(1, "Unknown stream key.")
    pair.pump()
    (status,) = pair.client_of(StatusReceived)
    assert (status.code, status.level) == ("NetStream.Publish.BadName", "error")
    assert status.info["description"] == "Unknown stream key."
    assert pair.client_of(PublishStarted) == []
    conn = pair.server.conn
    assert conn.closing
    assert not conn.awaiting_decision
    events_before, sent_before = len(pair.server.events), len(pair.server.sent)
    pair.client.send_message(3, 20, 0, 0, amf0.encode("publish", 9.0, None, "again"))
    pair.client.send_message(6, 9, 1, 0, key(100000))
    pair.pump()  # ignored: no events, no replies, no error
    assert len(pair.server.events) == events_before
    assert len(pair.server.sent) == sent_before


def test_reject_publish_with_another_code() -> None:
    pair = Pair(auto=False)
    pair.pump()
    pair.server.accept_connect()
    pair.pump()
    pair.client.publish(KEY)
    pair.pump()
    pair.server.reject_publish(1, "Already live.", "NetStream.Publish.Denied")
    pair.pump()
    (status,) = pair.client_of(StatusReceived)
    assert (status.code, status.info["description"]) == (
        "NetStream.Publish.Denied",
        "Already live.",
    )


def test_reject_connect() -> None:
    pair = Pair(auto=False)
    pair.pump()
    pair.server.reject_connect("Unknown application 'foo'.")
    pair.pump()
    (refused,) = pair.client_of(ConnectRefused)
    assert refused.info["code"] == "NetConnection.Connect.Rejected"
    assert refused.info["description"] == "Unknown application 'foo'."
    (reply,) = pair.server.sent
    assert reply.values[:3] == ["_error", 1.0, None]
    assert pair.server.conn.closing
    assert pair.server.feed(Peer().command("createStream", 2, None)) == []


def test_closing_ignores_input_even_with_a_backlog() -> None:
    """Refusing while the read buffer is full and more has queued up behind it."""
    config = RtmpConfig(read_buffer_size=4096)
    peer, server = Peer(), Server(config, auto=False)
    server.feed(peer.handshake() + peer.connect() + bytes(6000))
    assert server.conn.awaiting_decision
    assert server.conn.buffered_bytes() > config.read_buffer_size
    server.reject_connect("no")
    for _ in range(10):
        assert server.feed(bytes(4000)) == []  # never "kept sending while pending"
    assert server.conn.buffered_bytes() == config.read_buffer_size
    assert server.conn.bytes_received > 40000


# Pipelining and decisions ----------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_pipelined_commands_answered_in_order_after_the_decision(split: str) -> None:
    """OBS sends releaseStream/FCPublish/createStream without waiting for connect's answer."""
    peer, server = Peer(), Server(auto=False)
    burst = (
        peer.handshake()
        + peer.connect()
        + peer.command("releaseStream", 2, None, KEY)
        + peer.command("FCPublish", 3, None, KEY)
        + peer.command("createStream", 4, None)
        + peer.command("publish", 5, None, KEY, "live", msid=1, csid=8)
    )
    events = server.feed(burst, split)
    assert [type(e) for e in events] == [HandshakeCompleted, ConnectRequested]
    assert server.replies() == []  # nothing answered before the decision
    events = server.accept_connect()
    assert [type(e) for e in events] == [PublishRequested]
    assert names(server.replies()) == [5, 6, 1, "_result", "_result"]
    assert server.sent[-1].values[:2] == ["_result", 4.0]
    server.accept_publish(1)
    replies = server.replies()
    assert names(replies) == [4, "onStatus"]
    assert replies[1].info["code"] == "NetStream.Publish.Start"


def test_pipelined_input_larger_than_the_buffer_keeps_its_order() -> None:
    config = RtmpConfig(read_buffer_size=4096)
    peer, server = Peer(), Server(config, auto=False)
    opening = peer.handshake() + peer.connect()
    calls = b"".join(peer.command(f"call{i}", 0, None, "x" * 100) for i in range(60))
    server.feed(opening + calls)  # 3 x 4 KiB: buffer + backlog
    assert server.conn.buffered_bytes() > config.read_buffer_size
    server.accept_connect()
    server.feed(peer.command("last", 0, None))
    ignored = [e.name for e in server.of(CommandIgnored)]
    assert ignored == [f"call{i}" for i in range(60)] + ["last"]


def test_too_much_input_while_a_decision_is_pending() -> None:
    config = RtmpConfig(read_buffer_size=4096)
    peer, server = Peer(), Server(config, auto=False)
    server.feed(peer.handshake() + peer.connect() + bytes(4000))
    with pytest.raises(ProtocolError, match="kept sending while a decision was pending"):
        server.feed(bytes(5000))


def test_decisions_in_the_wrong_state_are_local_errors() -> None:
    peer, server = Peer(), Server(auto=False)
    with pytest.raises(LocalProtocolError, match="no connect to accept"):
        server.conn.accept_connect()
    server.feed(peer.handshake() + peer.connect())
    with pytest.raises(LocalProtocolError, match="no publish pending on stream 1"):
        server.conn.accept_publish(1)
    server.accept_connect()
    with pytest.raises(LocalProtocolError, match="no connect to reject"):
        server.conn.reject_connect("late")
    server.feed(peer.command("createStream", 2, None))
    server.feed(peer.command("publish", 3, None, KEY, msid=1, csid=8))
    with pytest.raises(LocalProtocolError, match="no publish pending on stream 2"):
        server.conn.reject_publish(2, "x")
    assert (server.of(PublishRequested)[0].publish_type, server.conn.state) == (
        "live",  # the default when the client gives none
        State.CONNECTED,
    )


# Client styles -----------------------------------------------------------------------------


def test_gstreamer_style_transaction_zero_and_delete_stream_by_name() -> None:
    peer, server = Peer(), Server()
    server.feed(
        peer.handshake()
        + peer.connect()
        + peer.command("releaseStream", 0, None, KEY)
        + peer.command("FCPublish", 0, None, KEY)
        + peer.command("createStream", 2, None)
        + peer.command("publish", 0, None, KEY, "live", msid=1, csid=3)
    )
    assert server.conn.publishing_stream_id == 1
    server.feed(peer.audio(0, aac(20)) + peer.command("deleteStream", 0, None, KEY))
    assert server.of(PublishStopped) == [PublishStopped(1, "deleteStream")]
    status = [m for m in server.replies() if m.type_id == 20 and m.name == "onStatus"]
    assert [m.info["code"] for m in status] == [
        "NetStream.Publish.Start",
        "NetStream.Unpublish.Success",
    ]
    assert server.conn.streams == {}
    server.feed(peer.audio(20, aac(20)))
    assert server.conn.counters.ignored_messages == 1  # no longer publishing
    assert server.of(CommandIgnored) == []  # transaction 0 commands are not errors


@pytest.mark.parametrize(
    ("commands", "reason"),
    [
        ((("FCUnpublish", 0, KEY), ("deleteStream", 0, 1.0)), "FCUnpublish"),
        ((("FCUnpublish", 4, KEY), ("deleteStream", 5, KEY)), "FCUnpublish"),
        ((("deleteStream", 4, 1.0), ("FCUnpublish", 5, KEY)), "deleteStream"),
        ((("closeStream", 4),), "closeStream"),
    ],
)
def test_publish_stops_once(commands: tuple, reason: str) -> None:
    server, peer = publishing()
    for name, txn, *args in commands:
        msid = 1 if name == "closeStream" else 0
        server.feed(peer.command(name, txn, None, *args, msid=msid, csid=8 if msid else 3))
    assert server.of(PublishStopped) == [PublishStopped(1, reason)]
    unpublished = [m for m in server.replies() if m.type_id == 20]
    assert [(m.name, m.info["code"], m.msid) for m in unpublished] == [
        ("onStatus", "NetStream.Unpublish.Success", 1)
    ]
    assert server.conn.publishing_stream_id is None


def test_delete_stream_of_another_stream_leaves_the_publish_alone() -> None:
    server, peer = publishing()
    server.feed(peer.command("createStream", 4, None))
    server.feed(peer.command("deleteStream", 5, None, 2.0))
    server.feed(peer.command("closeStream", 6, None, msid=2, csid=8))
    server.feed(peer.command("deleteStream", 7, None, float("nan")))
    assert server.of(PublishStopped) == []
    assert list(server.conn.streams) == [1]
    assert server.conn.publishing_stream_id == 1


def test_metadata_every_time_it_is_sent() -> None:
    server, peer = publishing()
    for i in range(40):
        server.feed(peer.metadata({"width": 320.0, "n": float(i)}, timestamp=i * 100))
    server.feed(peer.message(4, 18, 1, 0, amf0.encode("onMetaData", {"plain": True})))
    server.feed(peer.message(4, 18, 1, 0, amf0.encode("onCuePoint", {"x": 1.0})))
    server.feed(peer.message(4, 18, 1, 0, amf0.encode("@setDataFrame", "onMetaData", 5.0)))
    server.feed(peer.metadata({"other": 1.0}, msid=2))  # not the publishing stream
    events = server.of(MetadataReceived)
    assert len(events) == 41
    assert [(e.stream_id, e.timestamp, e.metadata) for e in events[:40]] == [
        (1, i * 100, {"width": 320.0, "n": float(i)}) for i in range(40)
    ]
    assert events[40].metadata == {"plain": True}


def test_play_is_refused_and_closes() -> None:
    peer, server = Peer(), Server()
    server.feed(
        peer.handshake()
        + peer.connect()
        + peer.command("createStream", 2, None)
        + peer.command("play", 3, None, KEY, msid=1, csid=8)
        + peer.command("createStream", 4, None)
    )
    assert server.conn.closing
    assert server.of(CommandIgnored) == [CommandIgnored("play", 1)]
    replies = server.replies()
    assert [m.name for m in replies if m.type_id == 20] == ["_result", "_result", "onStatus"]
    assert (replies[-1].msid, replies[-1].info["code"]) == (1, "NetStream.Play.Failed")
    assert replies[-1].info["level"] == "error"


def test_unknown_commands() -> None:
    server, peer = publishing()
    server.feed(peer.command("getStreamLength", 7, None, KEY))
    server.feed(peer.command("onBWDone", 0, None))
    server.feed(peer.command("FCSubscribe", 8, None, KEY, msid=1, csid=8))
    assert server.of(CommandIgnored) == [
        CommandIgnored("getStreamLength", 0),
        CommandIgnored("onBWDone", 0),
        CommandIgnored("FCSubscribe", 1),
    ]
    errors = server.replies()
    assert [(m.name, m.values[1], m.msid) for m in errors] == [
        ("_error", 7.0, 0),
        ("_error", 8.0, 1),
    ]
    assert errors[0].info["code"] == "NetConnection.Call.Failed"
    assert not server.conn.closing


def test_commands_nginx_does_not_answer() -> None:
    server, peer = publishing()
    for name in ("releaseStream", "FCPublish", "_result", "_error", "onStatus", "_checkbw"):
        server.feed(peer.command(name, 9, None))
    assert server.replies() == []
    assert server.of(CommandIgnored) == []


def test_end_publish() -> None:
    pair = Pair(auto=True)
    pair.pump()
    pair.client.publish(KEY)
    pair.pump()
    pair.server.conn.end_publish("Stream key revoked.")
    pair.pump()
    (status,) = pair.client_of(StatusReceived)
    assert (status.code, status.level, status.info["description"]) == (
        "NetConnection.Connect.Closed",
        "error",
        "Stream key revoked.",
    )
    assert status.stream_id == 1
    assert pair.server.conn.closing
    pair.client.send_video(0, key(100))
    pair.pump()
    assert pair.server.conn.counters.video_messages == 0


def test_request_reconnect() -> None:
    pair = Pair(auto=True, connect_properties={"capsEx": float(CapsEx.RECONNECT)})
    pair.pump()
    pair.client.publish(KEY)
    pair.pump()
    pair.server.conn.request_reconnect("rtmp://other.example/live", "Node draining.")
    pair.pump()
    (status,) = pair.client_of(StatusReceived)
    assert status.code == "NetConnection.Connect.ReconnectRequest"
    assert status.info["tcUrl"] == "rtmp://other.example/live"
    assert status.info["description"] == "Node draining."
    assert not pair.server.conn.closing
    pair.client.send_audio(0, aac(10))
    pair.pump()
    assert pair.server.conn.counters.audio_frames == 1


def test_stream_limit() -> None:
    peer, server = Peer(), Server()
    server.feed(peer.handshake() + peer.connect())
    for txn in range(2, 2 + CONFIG.max_streams + 1):
        server.feed(peer.command("createStream", txn, None))
    results = [m for m in server.replies() if m.type_id == 20][1:]
    assert [m.values[3] for m in results[:-1]] == [1.0, 2.0, 3.0, 4.0]
    assert results[-1].name == "_error"
    assert results[-1].info["description"] == "Too many streams."


def test_second_publish_on_a_connection_is_refused_without_closing() -> None:
    server, peer = publishing()
    server.feed(peer.command("createStream", 4, None))
    server.feed(peer.command("publish", 5, None, "other", msid=2, csid=8))
    assert len(server.of(PublishRequested)) == 1
    (status,) = server.replies()[1:]
    assert (status.msid, status.info["code"]) == (2, "NetStream.Publish.BadName")
    assert not server.conn.closing


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (lambda p: p.command("createStream", 1, None), "expected connect, got 'createStream'"),
        (lambda p: p.connect() + p.connect(txn=2), "connect sent twice"),
        (lambda p: p.command("connect", 1, "not an object"), "connect without a command object"),
        (lambda p: p.message(3, 20, 0, 0, amf0.encode("connect")), "without a name and a"),
        (lambda p: p.message(3, 20, 0, 0, amf0.encode(1.0, 2.0)), "without a name and a"),
        (lambda p: p.message(3, 20, 0, 0, amf0.encode("connect", "1")), "numeric transaction"),
        (lambda p: p.connect() + p.command("publish", 2, None, KEY, msid=1), "never created"),
    ],
)
def test_command_sequence_errors(wire, error: str) -> None:
    peer = Peer()
    with pytest.raises(ProtocolError, match=error):
        Server().feed(peer.handshake() + wire(peer))


def test_odd_connect_numbers_are_tolerated() -> None:
    peer, server = Peer(), Server(auto=False)
    props = {"capsEx": float("nan"), "objectEncoding": float("inf"), "fourCcList": "avc1"}
    server.feed(peer.handshake() + peer.connect(**props))
    (request,) = server.of(ConnectRequested)
    assert (request.caps_ex, request.object_encoding, request.fourcc_list) == (0, 0, ())


def test_media_before_publish_and_on_other_streams_is_ignored() -> None:
    server, peer = publishing(collect_media=True)
    server.feed(peer.video(0, key(50), msid=2) + peer.audio(0, aac(50), msid=0))
    assert server.conn.counters.ignored_messages == 2
    assert server.of(MediaReceived) == []
    assert server.conn.counters.video_messages == 0


def test_buffered_bytes_is_the_read_buffer_plus_partial_messages() -> None:
    server, peer = publishing()
    assert server.conn.buffered_bytes() == CONFIG.read_buffer_size
    partial = peer.message(5, 20, 0, 0, amf0.encode("x", 0.0, "y" * 1000))[:600]
    server.feed(partial)
    # 600 bytes at chunk size 128: a 12-byte header, then 4 one-byte continuation headers
    assert server.conn.buffered_bytes() == CONFIG.read_buffer_size + 600 - 12 - 4


def test_a_new_publish_starts_with_fresh_counters() -> None:
    server, peer = publishing()
    server.feed(peer.video(0, key(100)) + peer.audio(0, aac(50)))
    server.feed(peer.command("FCUnpublish", 4, None, "test-key"))
    server.feed(peer.video(40, key(100)))  # between publishes: ignored
    assert server.conn.counters.ignored_messages == 1
    server.feed(peer.command("publish", 5, None, "test-key", "live", msid=1, csid=8))
    assert len(server.of(PublishRequested)) == 2
    assert server.conn.counters.as_dict() == MediaCounters().as_dict()
    server.feed(peer.video(80, inter(60)))
    assert (server.conn.counters.video_frames, server.conn.counters.last_video_ts) == (1, 80)
