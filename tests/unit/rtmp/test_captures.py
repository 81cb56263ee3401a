"""Real sessions (tests/data/captures) replayed through the server and the client.

expected.json was produced once by an independent implementation (see its "_source"),
so these tests compare our parser with another one, not with itself.
"""

from __future__ import annotations

import hashlib
import json
import random
from functools import cache

import pytest

from stream_sync.rtmp.client import (
    ClientConnection,
    Connected,
    ConnectRefused,
    PublishStarted,
    StatusReceived,
)
from stream_sync.rtmp.config import RtmpConfig
from stream_sync.rtmp.errors import ProtocolError
from stream_sync.rtmp.events import (
    CodecConfigured,
    ConnectRequested,
    MediaReceived,
    MetadataReceived,
    PublishRequested,
    PublishStopped,
)

from .wire import CAPTURES, CONFIG, HANDSHAKE, T0, Capture, Decoder, Server, capture_names

NAMES = capture_names()
EXPECTED = json.loads((CAPTURES / "expected.json").read_text())
STOPS = ("FCUnpublish", "deleteStream", "closeStream")
BYTEWISE = [
    "ff51-h264-aac-extts",
    "ff9-hevc-opus",
    "ff9-multitrack",
    "gst-rtmp2sink-h264-aac",
    "obs29-h264-aac",
    "play-gst-rtmpsrc",
    "refuse-badname-obs29",
]
# Publishing sessions whose client numbered transactions as ours does (FFmpeg, OBS,
# librtmp: connect 1, releaseStream 2, FCPublish 3, createStream 4), so the reference
# server's replies can be fed to a ClientConnection.
CLIENT_NAMES = [
    name
    for name in NAMES
    if not name.startswith("play-") and EXPECTED[name]["transactions"][1:4] in ([2, 3, 4], [])
]
WHOLE = RtmpConfig(read_buffer_size=1 << 20)  # holds a whole capture while a decision waits


@cache
def capture(name: str) -> Capture:
    return Capture.load(name)


def summary(server: Server) -> dict:
    """Everything a replay must agree on, whatever the split."""
    counters = server.conn.counters
    media = server.of(MediaReceived)
    return {
        "video": [e.timestamp for e in media if e.message_type == 9],
        "audio": [e.timestamp for e in media if e.message_type == 8],
        "payloads": hashlib.sha256(b"".join(e.payload for e in media)).hexdigest(),
        "metadata": len(server.of(MetadataReceived)),
        "stopped": [e.reason for e in server.of(PublishStopped)],
        "codecs": [
            [e.media, e.packet.codec, e.packet.track, str(e.packet.kind)]
            for e in server.of(CodecConfigured)
        ],
        "counters": counters.as_dict(),
        "closing": server.conn.closing,
        "replies": [(m.type_id, m.msid, m.body) for m in server.replies()],
    }


def replay(name: str, split: str | random.Random, config: RtmpConfig = CONFIG) -> Server:
    server = Server(config, collect_media=True)
    server.feed(capture(name).c2s, split)
    return server


@cache
def recorded(name: str) -> dict:
    """Fed at the recorded read boundaries, at their recorded times."""
    server = Server(collect_media=True)
    for data, t in capture(name).recorded("c2s"):
        server.feed(data, now=T0 + t)
    return summary(server)


def expected_stop(name: str) -> list[str]:
    commands = EXPECTED[name]["commands"]
    if "publish" not in commands:
        return []
    after = commands[commands.index("publish") :]
    return [next(c for c in after if c in STOPS)] if any(c in STOPS for c in after) else []


def test_expected_covers_every_capture() -> None:
    assert sorted(k for k in EXPECTED if not k.startswith("_")) == NAMES
    assert len(NAMES) == 28
    assert "replay.py" in EXPECTED["_source"]


@pytest.mark.parametrize("name", NAMES)
def test_recorded_boundaries_match_the_reference(name: str) -> None:
    expected, got = EXPECTED[name], recorded(name)
    assert got["video"] == expected["video_timestamps"]
    assert got["audio"] == expected["audio_timestamps"]
    assert len(got["video"]) == expected["video_messages"]
    assert len(got["audio"]) == expected["audio_messages"]
    assert got["metadata"] == expected["data_messages"]
    assert got["codecs"] == expected["codec_configs"]
    assert got["stopped"] == expected_stop(name)
    assert got["closing"] == ("play" in expected["commands"])


@pytest.mark.parametrize("name", NAMES)
def test_commands_match_the_reference(name: str) -> None:
    commands = [m for m in Decoder(skip=HANDSHAKE).feed(capture(name).c2s) if m.type_id in (17, 20)]
    assert [m.name for m in commands] == EXPECTED[name]["commands"]
    assert [m.values[1] for m in commands] == EXPECTED[name]["transactions"]


@pytest.mark.parametrize("name", NAMES)
def test_whole_and_random_splits_agree(name: str) -> None:
    reference = recorded(name)
    assert summary(replay(name, "whole", WHOLE)) == reference
    for seed in (1, 2):
        assert summary(replay(name, random.Random(seed))) == reference


@pytest.mark.parametrize("name", BYTEWISE)
def test_byte_by_byte(name: str) -> None:
    assert summary(replay(name, "bytes")) == recorded(name)


@pytest.mark.parametrize("name", NAMES)
def test_counting_mode_agrees_with_collect_mode(name: str) -> None:
    server = Server()
    for data, t in capture(name).recorded("c2s"):
        server.feed(data, now=T0 + t)
    assert server.conn.counters.as_dict() == recorded(name)["counters"]
    counters = server.conn.counters
    assert counters.video_messages == EXPECTED[name]["video_messages"]
    assert counters.audio_messages == EXPECTED[name]["audio_messages"]
    assert counters.malformed_messages == counters.ignored_messages == 0


@pytest.mark.parametrize("name", ["ff51-h264-aac", "obs29-h264-aac", "ff9-multitrack"])
def test_socket_style_feeding_with_the_default_config(name: str) -> None:
    """As the asyncio protocol does: read into get_buffer(), stop while it is empty."""
    server, data, offset, rng = Server(collect_media=True), capture(name).c2s, 0, random.Random(3)
    while offset < len(data):
        space = server.conn.get_buffer()
        assert space, "a decision would have to be pending, and they are answered at once"
        n = min(len(space), len(data) - offset, rng.randint(1, 70000))
        space[:n] = data[offset : offset + n]
        offset += n
        server.absorb(server.conn.buffer_updated(n, T0))
    assert summary(server) == recorded(name)


def test_whole_capture_overflows_the_default_backlog_while_connect_waits() -> None:
    server = Server(auto=False)
    with pytest.raises(ProtocolError, match="kept sending while a decision was pending"):
        server.feed(capture("obs29-h264-aac").c2s)


def test_extended_timestamps_capture() -> None:
    got = recorded("ff51-h264-aac-extts")
    frames = [ts for ts in got["video"] if ts]
    assert all(0xFFFFFF < ts < 16_800_000 for ts in frames)
    assert got["counters"]["last_video_ts"] > 0xFFFFFF
    assert got["counters"]["last_audio_ts"] > 0xFFFFFF
    assert got["counters"]["timestamp_regressions"] == 0


def test_gstreamer_metadata_every_few_frames() -> None:
    assert recorded("gst-rtmpsink-h264-aac")["metadata"] == 26
    assert recorded("gst-rtmp2sink-h264-aac")["metadata"] == 29


def test_decisions_in_the_captures() -> None:
    for name in NAMES:
        server = Server(collect_media=True)
        server.feed(capture(name).c2s[: HANDSHAKE + 4096], "random")
        connects = server.of(ConnectRequested)
        assert [c.app for c in connects] == ["live"]
        publishes = server.of(PublishRequested)
        assert len(publishes) == int("publish" in EXPECTED[name]["commands"])
        for publish in publishes:
            assert "-key-" in publish.name
            assert publish.name.encode() in capture(name).c2s
            assert publish.name not in repr(publish)


def test_client_captures() -> None:
    assert len(CLIENT_NAMES) == 23  # all but the 3 play and 2 rtmp2sink sessions


@pytest.mark.parametrize("name", CLIENT_NAMES)
def test_client_reads_the_reference_servers_replies(name: str) -> None:
    """Feed a ClientConnection what nginx (or the refusing server) really sent."""
    expected = EXPECTED[name]
    for split in ("recorded", "bytes"):
        client = ClientConnection(app="live", tc_url="rtmp://127.0.0.1/live", now=T0, digest=False)
        data = capture(name).s2c
        chunks = [d for d, _ in capture(name).recorded("s2c")] if split == "recorded" else data
        events = []
        for chunk in chunks:
            new = client.receive_data(chunk if split == "recorded" else bytes((chunk,)))
            if any(isinstance(e, Connected) for e in new):
                client.publish("test-key")
            events += new
            client.data_to_send()  # goes nowhere
        server_commands, codes = expected["server_commands"], expected["server_status_codes"]
        connected = [e for e in events if isinstance(e, Connected)]
        assert len(connected) == int("_result" in server_commands)
        if connected:
            assert connected[0].info["code"] == "NetConnection.Connect.Success"
            assert connected[0].properties["fmsVer"] == "FMS/3,0,1,123"
        assert len([e for e in events if isinstance(e, ConnectRefused)]) == int(
            server_commands[:1] == ["_error"]
        )
        started = [e for e in events if isinstance(e, PublishStarted)]
        assert started == [PublishStarted(1)] * codes.count("NetStream.Publish.Start")
        statuses = [e.code for e in events if isinstance(e, StatusReceived)]
        assert statuses == [c for c in codes if c != "NetStream.Publish.Start"]
        assert client.stream_id == (1 if server_commands.count("_result") == 2 else 0)
