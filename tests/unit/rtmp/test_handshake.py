"""The handshake: plain and digest, checked against real FFmpeg, nginx and GStreamer bytes.

Digests are checked here with hmac/hashlib directly (the Flash 9 scheme in a few
lines), not with handshake.py's own helpers, except where the task is to prove
handshake.verify_server_reply itself.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from stream_sync.rtmp import handshake
from stream_sync.rtmp.client import ClientConnection, Connected
from stream_sync.rtmp.config import RtmpConfig
from stream_sync.rtmp.connection import ServerConnection, State
from stream_sync.rtmp.errors import (
    HandshakeTimeoutError,
    IdleTimeoutError,
    ProtocolError,
    PublishTimeoutError,
)
from stream_sync.rtmp.events import HandshakeCompleted

from .wire import CONFIG, T0, Capture, Pair, Peer, Server, seeded_bytes

FP_KEY = b"Genuine Adobe Flash Player 001"  # + the 32-byte tail below for answers
FMS_KEY = b"Genuine Adobe Flash Media Server 001"
KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_of(block: bytes, key: bytes) -> tuple[int, bytes] | None:
    """(scheme, digest) of a C1/S1 signed under key, per the Flash 9 handshake."""
    for scheme, base in ((0, 8), (1, 772)):
        offset = sum(block[base : base + 4]) % 728 + base + 4
        if _mac(key, block[:offset] + block[offset + 32 :]) == block[offset : offset + 32]:
            return scheme, block[offset : offset + 32]
    return None


def is_answer(block: bytes, peer_digest: bytes, full_key: bytes) -> bool:
    """C2/S2: random bytes whose last 32 are HMAC(HMAC(key, peer digest), the rest)."""
    return _mac(_mac(full_key, peer_digest), block[:-32]) == block[-32:]


def signed_c1(scheme: int, seed: int = 3) -> bytes:
    block = bytearray(bytes(4) + bytes((9, 0, 124, 2)) + seeded_bytes(seed)(1528))
    base = 8 if scheme == 0 else 772
    offset = sum(block[base : base + 4]) % 728 + base + 4
    block[offset : offset + 32] = _mac(FP_KEY, bytes(block[:offset] + block[offset + 32 :]))
    return bytes(block)


FFMPEG = Capture.load("ff51-h264-aac")
FFMPEG_C1 = FFMPEG.c2s[1:1537]  # FFmpeg 5.1's digest C1, as sent to nginx
NGINX_S1, NGINX_S2 = FFMPEG.s2c[1:1537], FFMPEG.s2c[1537:3073]


def test_plain_c1_gets_plain_s1_and_an_echo() -> None:
    c1 = bytes(8) + seeded_bytes(1)(1528)
    conn = ServerConnection(CONFIG, now=T0, epoch_ms=0x01020304, random_bytes=seeded_bytes(2))
    assert conn.receive_data(b"\x03" + c1, T0) == []
    reply = conn.data_to_send()
    assert len(reply) == 3073
    s0, s1, s2 = reply[0], reply[1:1537], reply[1537:]
    assert s0 == 3
    assert s1[:8] == bytes.fromhex("01020304 00000000")  # our time, version 0: plain
    assert s1[8:] != c1[8:]
    assert s2 == c1
    assert conn.receive_data(bytes(1536), T0) == [HandshakeCompleted(None)]


def test_ffmpeg_digest_c1_gets_a_valid_digest_reply() -> None:
    scheme, c1_digest = digest_of(FFMPEG_C1, FP_KEY)  # FFmpeg signs with scheme 0
    assert scheme == 0
    conn = ServerConnection(CONFIG, now=T0, epoch_ms=5, random_bytes=seeded_bytes(2))
    conn.receive_data(FFMPEG.c2s[:1537], T0)
    reply = conn.data_to_send()
    s1, s2 = reply[1:1537], reply[1537:]
    assert reply[0] == 3
    assert s1[:8] == bytes.fromhex("00000005") + handshake.SERVER_VERSION
    assert digest_of(s1, FMS_KEY) is not None
    assert digest_of(s1, FMS_KEY)[0] == 0  # the client's scheme
    assert is_answer(s2, c1_digest, FMS_KEY + KEY_TAIL)
    assert handshake.verify_server_reply(s1, s2, c1_digest)
    assert conn.receive_data(FFMPEG.c2s[1537:3073], T0) == [HandshakeCompleted(0)]


def test_scheme_1_digest_is_answered_in_scheme_1() -> None:
    c1 = signed_c1(scheme=1)
    assert digest_of(c1, FP_KEY)[0] == 1
    conn = ServerConnection(CONFIG, now=T0, random_bytes=seeded_bytes(4))
    conn.receive_data(b"\x03" + c1, T0)
    reply = conn.data_to_send()
    assert digest_of(reply[1:1537], FMS_KEY)[0] == 1
    assert is_answer(reply[1537:], digest_of(c1, FP_KEY)[1], FMS_KEY + KEY_TAIL)
    assert conn.digest_scheme == 1


def test_version_bytes_without_a_valid_digest_get_the_plain_handshake() -> None:
    c1 = bytearray(signed_c1(scheme=0))
    c1[1000] ^= 0xFF  # the digest no longer matches
    conn = ServerConnection(CONFIG, now=T0)
    conn.receive_data(b"\x03" + bytes(c1), T0)
    reply = conn.data_to_send()
    assert reply[1537:] == bytes(c1)
    assert conn.digest_scheme is None


def test_verifier_accepts_nginx_reply_to_ffmpeg() -> None:
    """Proves verify_server_reply against a real server: nginx-rtmp's S1/S2 for FFmpeg's C1."""
    c1_digest = digest_of(FFMPEG_C1, FP_KEY)[1]
    assert handshake.verify_server_reply(NGINX_S1, NGINX_S2, c1_digest)
    assert not handshake.verify_server_reply(NGINX_S1, NGINX_S2, bytes(32))
    broken_s2 = NGINX_S2[:100] + bytes((NGINX_S2[100] ^ 1,)) + NGINX_S2[101:]
    assert not handshake.verify_server_reply(NGINX_S1, broken_s2, c1_digest)
    broken_s1 = NGINX_S1[:1200] + bytes((NGINX_S1[1200] ^ 1,)) + NGINX_S1[1201:]
    assert not handshake.verify_server_reply(broken_s1, NGINX_S2, c1_digest)


def test_ffmpeg_play_c2_answers_nginx_s1() -> None:
    """FFmpeg playing verifies the server and answers S1's digest in C2 (the player side)."""
    play = Capture.load("play-ff51")
    s1, c2 = play.s2c[1:1537], play.c2s[1537:3073]
    s1_digest = digest_of(s1, FMS_KEY)[1]
    assert is_answer(c2, s1_digest, FP_KEY + KEY_TAIL)
    assert c2 != s1


def test_our_client_answers_a_digest_s1_like_ffmpeg() -> None:
    c2 = handshake.client_c2(NGINX_S1, digest=True, random_bytes=seeded_bytes(5))
    assert is_answer(c2, digest_of(NGINX_S1, FMS_KEY)[1], FP_KEY + KEY_TAIL)
    assert handshake.client_c2(NGINX_S1, digest=False, random_bytes=seeded_bytes(5)) == NGINX_S1


def test_our_digest_client_sends_an_ffmpeg_like_c1() -> None:
    hello = handshake.client_hello(digest=True, epoch_ms=7, random_bytes=seeded_bytes(6))
    c1 = hello.c0c1[1:]
    assert hello.c0c1[0] == 3
    assert c1[:8] == bytes.fromhex("00000007 09007c02")
    assert digest_of(c1, FP_KEY) == (0, hello.digest)
    plain = handshake.client_hello(digest=False, epoch_ms=7, random_bytes=seeded_bytes(6))
    assert plain.digest is None
    assert plain.c0c1[1:9] == bytes.fromhex("00000007 00000000")


@pytest.mark.parametrize("digest", [True, False])
def test_client_and_server_complete_either_handshake(digest: bool) -> None:
    pair = Pair(auto=True, digest=digest)
    pair.pump()
    (connected,) = pair.client_of(Connected)
    assert connected.server_digest_valid is (True if digest else None)
    assert pair.server.of(HandshakeCompleted) == [HandshakeCompleted(0 if digest else None)]


def test_client_notices_a_server_reply_that_does_not_verify() -> None:
    client = ClientConnection(app="live", tc_url="rtmp://h/live", now=T0, digest=True)
    client.data_to_send()  # its C0+C1 never reaches this server...
    server = Server(auto=True)
    server.feed(b"\x03" + signed_c1(0))  # ...which answers another client's digest C1
    events = client.receive_data(server.flush())
    server.feed(client.data_to_send())  # C2 (not checked) and connect
    events += client.receive_data(server.flush())
    (connected,) = [e for e in events if isinstance(e, Connected)]
    assert connected.server_digest_valid is False


def test_c2_need_not_echo_s1() -> None:
    """GStreamer's rtmp2 rewrites bytes 4-7 of C2; anything of the right size is accepted."""
    gst = Capture.load("gst-rtmp2sink-h264-aac")
    nginx_s1 = gst.s2c[1:1537]
    gst_c2 = gst.c2s[1537:3073]
    assert (gst_c2[:4], gst_c2[8:]) == (nginx_s1[:4], nginx_s1[8:])
    assert gst_c2[4:8] != nginx_s1[4:8]
    server = Server()
    assert server.feed(gst.c2s[:3073]) == [HandshakeCompleted(None)]  # its C2 vs our S1
    for c2 in (bytes(1536), b"\xff" * 1536):
        server = Server()
        server.feed(Peer().handshake()[:1537])
        s1 = server.conn.data_to_send()[1:1537]
        assert c2 != s1
        assert server.feed(c2) == [HandshakeCompleted(None)]


@pytest.mark.parametrize(
    ("first_bytes", "error"),
    [
        (b"\x06", "RTMPE (encrypted RTMP) is not supported"),
        (b"\x08", "RTMPE (encrypted RTMP) is not supported"),
        (b"\x09", "RTMPE (encrypted RTMP) is not supported"),
        (bytes.fromhex("160301 0200 01"), "looks like a TLS handshake"),
        (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "looks like an HTTP request"),
        (b"POST /x HTTP/1.1\r\n", "looks like an HTTP request"),
        (b"\x00", "unsupported RTMP version 0 in C0"),
        (b"\x04", "unsupported RTMP version 4 in C0"),
        (b"\xff" * 1537, "unsupported RTMP version 255 in C0"),
    ],
)
def test_wrong_c0_refused_with_a_clear_message(first_bytes: bytes, error: str) -> None:
    server = Server()
    with pytest.raises(ProtocolError, match=error.replace("(", r"\(").replace(")", r"\)")):
        server.feed(first_bytes)
    assert server.conn.data_to_send() == b""  # nothing answered


def test_wrong_c0_messages_are_distinct() -> None:
    messages = set()
    for c0 in (6, 0x16, ord("G"), 4):
        with pytest.raises(ProtocolError) as caught:
            Server().feed(bytes((c0,)))
        messages.add(str(caught.value))
    assert len(messages) == 4


def test_stalled_handshake_times_out() -> None:
    server = Server()
    server.feed(Peer().handshake()[:1000])  # part of C1, then nothing
    conn = server.conn
    assert conn.deadline() == T0 + CONFIG.handshake_timeout
    conn.handle_timer(T0 + CONFIG.handshake_timeout - 0.001)
    with pytest.raises(HandshakeTimeoutError, match="handshake not completed within 5 s"):
        conn.handle_timer(T0 + CONFIG.handshake_timeout)


def test_handshake_timeout_is_not_extended_by_a_trickle() -> None:
    config = RtmpConfig(handshake_timeout=2.0)
    server = Server(config)
    data = Peer().handshake()
    for i in range(20):  # one byte every 0.1 s: never idle, never done
        server.feed(data[i : i + 1], now=T0 + 0.1 * i)
    assert server.conn.state is State.HANDSHAKE
    assert server.conn.deadline() == T0 + 2.0
    with pytest.raises(HandshakeTimeoutError):
        server.conn.handle_timer(T0 + 2.0)


def test_missing_c2_times_out_too() -> None:
    server = Server()
    server.feed(Peer().handshake()[:1537])
    assert server.conn.state is State.HANDSHAKE_ACK
    with pytest.raises(HandshakeTimeoutError):
        server.conn.handle_timer(T0 + CONFIG.handshake_timeout)


def test_idle_timeout_after_the_handshake() -> None:
    config = RtmpConfig(publish_timeout=3600)  # only the idle timeout applies here
    server = Server(config)
    server.feed(Peer().handshake(), now=T0 + 1)
    conn = server.conn
    assert conn.deadline() == T0 + 1 + config.idle_timeout
    conn.handle_timer(T0 + config.handshake_timeout + 1)  # the handshake is done: no timeout
    server.feed(Peer().connect(), now=T0 + 20)
    assert conn.deadline() == T0 + 20 + config.idle_timeout
    conn.handle_timer(T0 + 20 + config.idle_timeout - 0.001)
    with pytest.raises(IdleTimeoutError, match="nothing received for 30 s"):
        conn.handle_timer(T0 + 20 + config.idle_timeout)
    assert issubclass(IdleTimeoutError, ProtocolError)
    assert issubclass(HandshakeTimeoutError, ProtocolError)
    assert issubclass(PublishTimeoutError, ProtocolError)


def test_a_connection_that_never_publishes_times_out() -> None:
    """Connect, then trickle: never idle, handshake done, still dropped at the deadline."""
    server = Server(RtmpConfig(publish_timeout=10))
    server.feed(Peer().handshake() + Peer().connect(), now=T0 + 1)
    conn = server.conn
    assert conn.deadline() == T0 + 10
    conn.handle_timer(T0 + 9.999)
    with pytest.raises(PublishTimeoutError, match="no publish within 10 s"):
        conn.handle_timer(T0 + 10)


def test_publishing_lifts_the_publish_timeout() -> None:
    config = RtmpConfig(publish_timeout=10)
    server = Server(config)
    server.feed(Peer().publish_session(), now=T0 + 1)
    conn = server.conn
    assert conn.publish_requested
    assert conn.deadline() == T0 + 1 + config.idle_timeout
    conn.handle_timer(T0 + 20)  # past the publish timeout: nothing raised
