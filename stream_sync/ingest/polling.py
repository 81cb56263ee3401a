"""Live publishers' sockets read on a timer, all together, instead of woken one by one.

Batching with SO_RCVLOWAT (batching.py) made each wake-up carry a useful amount,
but at 200 streams it still meant thousands of epoll wake-ups, context switches
and reads a second, one stream at a time. A live publisher's media needs no
prompter handling than the monitor's tenth of a second, so once it flows, the
event loop stops watching the socket and one timer reads every such socket in
turn: ten reads a second per stream and ten wake-ups in all, at any number of
streams. Control messages still arrive within ``interval``; so does EOF. When the
publish ends, or a stream grows too fast for the rounds, the event loop reads
the connection again.

Plain TCP only: a TLS connection's bytes must go through its SSL object, so
RTMPS publishers keep the event loop's reads (and their low-water mark). Linux
and other Unix systems only (os.readv).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocol import RtmpProtocol

SUPPORTED = hasattr(os, "readv")
# A stream that brings more than this per round goes back to the event loop: at
# that rate (40 Mbit/s at the default tenth of a second) the receive buffer, not
# the wake-ups, would set its pace. The sweep takes a stream only below half of it.
MAX_ROUND_BYTES = 512 * 1024


class ReadPoller:
    """The publishers whose sockets the timer reads, and the timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self.interval = interval
        self._polled: dict[RtmpProtocol, int] = {}  # protocol -> its socket's descriptor
        self._timer: asyncio.TimerHandle | None = None

    def __contains__(self, proto: object) -> bool:
        return proto in self._polled

    def take(self, proto: RtmpProtocol) -> bool:
        """Read this connection on the timer from now on; False if it cannot be."""
        transport = proto.transport
        if not SUPPORTED or proto.tls or transport is None or transport.is_closing():
            return False
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        transport.pause_reading()
        self._polled[proto] = sock.fileno()
        if self._timer is None:
            self._timer = self._loop.call_later(self.interval, self._tick)
        return True

    def release(self, proto: RtmpProtocol) -> None:
        """The connection is gone."""
        self._polled.pop(proto, None)

    def give_back(self, proto: RtmpProtocol) -> None:
        """The event loop reads this connection again (its publish ended)."""
        if self._polled.pop(proto, None) is not None:
            proto.read_by_loop()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._polled.clear()

    def wants(self, rate: float) -> bool:
        """Whether a stream of ``rate`` bytes a second is slow enough to be polled."""
        return SUPPORTED and rate * self.interval <= MAX_ROUND_BYTES / 2

    def _tick(self) -> None:
        self._timer = None
        for proto, fd in list(self._polled.items()):
            read = proto.read_from(fd)
            if read < 0:
                self._polled.pop(proto, None)
            elif read > MAX_ROUND_BYTES:
                self.give_back(proto)
        if self._polled:
            self._timer = self._loop.call_later(self.interval, self._tick)
