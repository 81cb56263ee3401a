"""The RTMP handshake: C0/C1/C2 and S0/S1/S2, plain and Flash-9 digest.

FFmpeg (every version) sends a digest C1 (scheme 0, version 9.0.124.2) and, when
playing, verifies our S1 digest and S2 signature; librtmp, OBS and GStreamer send a
plain C1 (version 0). So the server answers a digest C1 with a digest S1/S2 in the
client's scheme, and a plain C1 with a plain S1 and an echo of C1. C2 is never
required to echo S1: GStreamer's rtmp2 rewrites bytes 4-7 of it.

These are pure functions of their inputs; the caller passes the time and a source
of random bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ProtocolError

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32

_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
_FP_KEY_SHORT = FP_KEY[:30]
_FMS_KEY_SHORT = FMS_KEY[:36]

FFMPEG_CLIENT_VERSION = bytes((9, 0, 124, 2))
SERVER_VERSION = bytes((13, 14, 10, 13))

RandomBytes = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class ServerReply:
    """What the server sends after C0+C1, and what it learned about the client."""

    s0s1s2: bytes
    digest_scheme: int | None  # None for the plain handshake


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_offset(block: bytes | bytearray, scheme: int) -> int:
    """Where the 32-byte digest sits in a 1536-byte C1/S1 for scheme 0 or 1."""
    base = 8 if scheme == 0 else 772
    return (block[base] + block[base + 1] + block[base + 2] + block[base + 3]) % 728 + base + 4


def _block_digest(block: bytes, offset: int, key: bytes) -> bytes:
    return _hmac(key, block[:offset] + block[offset + DIGEST_SIZE :])


def find_digest(block: bytes, key: bytes) -> tuple[int, bytes] | None:
    """Return (scheme, digest) if the block carries a valid digest under key."""
    for scheme in (0, 1):
        offset = digest_offset(block, scheme)
        digest = block[offset : offset + DIGEST_SIZE]
        if hmac.compare_digest(digest, _block_digest(block, offset, key)):
            return scheme, digest
    return None


def _signed_block(
    head: bytes, scheme: int, key: bytes, random_bytes: RandomBytes
) -> tuple[bytes, bytes]:
    block = bytearray(head + random_bytes(HANDSHAKE_SIZE - len(head)))
    offset = digest_offset(block, scheme)
    digest = _block_digest(bytes(block), offset, key)
    block[offset : offset + DIGEST_SIZE] = digest
    return bytes(block), digest


def _answer(peer_digest: bytes, key: bytes, random_bytes: RandomBytes) -> bytes:
    """The second block of a digest handshake: random bytes signed with the peer digest."""
    body = random_bytes(HANDSHAKE_SIZE - DIGEST_SIZE)
    return body + _hmac(_hmac(key, peer_digest), body)


def check_c0(version: int) -> None:
    """Refuse a wrong C0 from its first byte: port scanners and HTTP clients send few bytes."""
    if version == RTMP_VERSION:
        return
    if version in (6, 8, 9):
        raise ProtocolError("RTMPE (encrypted RTMP) is not supported; use RTMPS")
    if version == 0x16:
        raise ProtocolError("not RTMP: this looks like a TLS handshake (use the RTMPS port)")
    if chr(version) in "GPHOCDT":
        raise ProtocolError("not RTMP: this looks like an HTTP request")
    raise ProtocolError(f"unsupported RTMP version {version} in C0")


def server_reply(c0c1: bytes, *, epoch_ms: int, random_bytes: RandomBytes) -> ServerReply:
    """Answer C0+C1 (1537 bytes) with S0+S1+S2."""
    if len(c0c1) != 1 + HANDSHAKE_SIZE:
        raise ValueError("C0+C1 must be 1537 bytes")
    check_c0(c0c1[0])
    c1 = c0c1[1:]
    time_field = (epoch_ms & 0xFFFFFFFF).to_bytes(4, "big")
    found = find_digest(c1, _FP_KEY_SHORT) if c1[4:8] != b"\x00\x00\x00\x00" else None
    if found is None:
        s1 = time_field + b"\x00\x00\x00\x00" + random_bytes(HANDSHAKE_SIZE - 8)
        return ServerReply(bytes((RTMP_VERSION,)) + s1 + c1, None)
    scheme, c1_digest = found
    s1, _ = _signed_block(time_field + SERVER_VERSION, scheme, _FMS_KEY_SHORT, random_bytes)
    s2 = _answer(c1_digest, FMS_KEY, random_bytes)
    return ServerReply(bytes((RTMP_VERSION,)) + s1 + s2, scheme)


# Client side: used by the project's own publisher (tests, load generator, relay).


@dataclass(frozen=True, slots=True)
class ClientHello:
    c0c1: bytes
    digest: bytes | None  # our C1 digest, needed to check S2


def client_hello(*, digest: bool, epoch_ms: int, random_bytes: RandomBytes) -> ClientHello:
    time_field = (epoch_ms & 0xFFFFFFFF).to_bytes(4, "big")
    if not digest:
        c1 = time_field + b"\x00\x00\x00\x00" + random_bytes(HANDSHAKE_SIZE - 8)
        return ClientHello(bytes((RTMP_VERSION,)) + c1, None)
    c1, c1_digest = _signed_block(
        time_field + FFMPEG_CLIENT_VERSION, 0, _FP_KEY_SHORT, random_bytes
    )
    return ClientHello(bytes((RTMP_VERSION,)) + c1, c1_digest)


def verify_server_reply(s1: bytes, s2: bytes, c1_digest: bytes) -> bool:
    """Check S1's digest and S2's signature as a verifying client (FFmpeg playing) does."""
    if find_digest(s1, _FMS_KEY_SHORT) is None:
        return False
    body, signature = s2[:-DIGEST_SIZE], s2[-DIGEST_SIZE:]
    return hmac.compare_digest(signature, _hmac(_hmac(FMS_KEY, c1_digest), body))


def client_c2(s1: bytes, *, digest: bool, random_bytes: RandomBytes) -> bytes:
    """C2: a digest answer to a digest S1, else an echo of S1."""
    found = find_digest(s1, _FMS_KEY_SHORT) if digest else None
    if found is None:
        return s1
    return _answer(found[1], FP_KEY, random_bytes)
