"""Loopback ports and socket queues: where servers listen, and bytes not yet read.

`unread_bytes` is the server half of the "ingested" measurement: at the end of a
window the bytes a publisher handed over but the server has not read yet sit in the
generator's transport buffer, its kernel send queue (both measured by the generator)
or the server socket's receive queue (Recv-Q, measured here with `ss`).
"""

from __future__ import annotations

import re
import socket
import subprocess
import time

HOST = "127.0.0.1"
_PID = re.compile(r"pid=(\d+)")


def free_port() -> int:
    """A port free right now on the loopback address (the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        time.sleep(0.05)
    return False


def _ss(*filters: str) -> list[str]:
    out = subprocess.run(
        ["ss", "-tnpH", *filters], capture_output=True, text=True, check=False
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def unread_bytes(port: int) -> int:
    """Recv-Q summed over the established connections a server accepted on `port`."""
    total = 0
    for line in _ss("state", "established", f"( sport = :{port} )"):
        total += int(line.split()[0])  # without a State column, Recv-Q comes first
    return total


def listening_pids(port: int) -> list[int]:
    """The processes listening on a local TCP port (e.g. Redis, PostgreSQL)."""
    pids: set[int] = set()
    for line in _ss("state", "listening", f"( sport = :{port} )"):
        pids.update(int(pid) for pid in _PID.findall(line))
    return sorted(pids)
