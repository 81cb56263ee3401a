"""The supervisor's hold on the RTMP port its workers share.

The port is checked once, by the supervisor, with an ordinary bind (no
SO_REUSEPORT): a port another program listens on, or another stream-sync with its
own workers, fails here with the usual one-line error instead of being silently
shared. Then the supervisor marks its bound (never listening) sockets SO_REUSEPORT
and keeps them for its lifetime. That lets its workers bind the same address with
SO_REUSEPORT (the kernel only lets sockets of the same user join), keeps every other
program off the port while a worker restarts, and fixes the port when the operator
asked for port 0: every worker must listen on the one the supervisor picked.
A bound socket that does not listen receives no connections.
"""

from __future__ import annotations

import contextlib
import socket

from ..ingest.listener import passive_addresses


class PortReservation:
    def __init__(self, sockets: list[socket.socket], port: int) -> None:
        self._sockets = sockets
        self.port = port

    @classmethod
    def take(cls, host: str, port: int) -> PortReservation:
        """Bind every address of host on port (a free one when port is 0); OSError if taken."""
        sockets: list[socket.socket] = []
        try:
            for family, address in passive_addresses(host, port):
                sock = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the workers do
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                # All addresses on one port: the first bind picks it when port is 0.
                sock.bind((address[0], port, *address[2:]))
                port = sock.getsockname()[1]
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        return cls(sockets, port)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._sockets = []
