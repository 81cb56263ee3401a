"""Fewer, larger reads from live publishers: a receive low-water mark per stream.

A real-time encoder writes each frame as it is encoded, some eighty small writes a
second per stream, and every one of them woke the event loop: an epoll round, a
recv and a call into Python. At 200 streams that per-read overhead, not the bytes,
was most of the ingest's CPU. With SO_RCVLOWAT the kernel wakes the server only
once a batch's worth of the stream is waiting (``batch`` seconds at the stream's
own bitrate), or at EOF.

The mark follows each stream's bitrate, retuned at every sweep from the bytes it
sent since the last one. A stream that sent nothing during a sweep gets the default
mark back, so a tail smaller than the mark (the last frames before a pause, a
closing command) is read at once: Linux signals readability when the mark drops.
So the batching delays media by about ``batch`` while it flows, and by a sweep or
two at most when it stops. Linux only; elsewhere reads are left as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

SUPPORTED = sys.platform.startswith("linux") and hasattr(socket, "SO_RCVLOWAT")
# Below this a mark saves too few wake-ups to be worth a system call.
MIN_MARK = 4096
# Above this, raising the mark can make Linux grow the receive buffer and clamp the
# TCP window to the mark (tcp_set_rcvlowat): a long-distance encoder would be slowed.
MAX_MARK = 32 * 1024
DEFAULT_MARK = 1


def next_mark(current: int, sent: int, elapsed: float, batch: float, limit: int) -> int:
    """The low-water mark for the next sweep, from the bytes sent during the last one.

    ``limit`` keeps a batch within the read buffer. A change within a quarter of the
    current mark keeps the current one: no system call for a bitrate's wobble.
    """
    if sent <= 0 or elapsed <= 0 or batch <= 0:
        return DEFAULT_MARK  # quiet: read what waits, then measure again
    wanted = min(int(sent / elapsed * batch), limit)
    if wanted < MIN_MARK:
        return DEFAULT_MARK
    if current > DEFAULT_MARK and abs(wanted - current) * 4 < current:
        return current
    return wanted


def set_mark(transport: asyncio.BaseTransport, mark: int) -> bool:
    """Set the socket's receive low-water mark; False if it could not be set."""
    sock = transport.get_extra_info("socket")
    if sock is None or not SUPPORTED:
        return False
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
        return True
    return False
