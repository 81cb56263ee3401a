"""Ingest worker processes: one server name, several processes sharing its RTMP port.

`--workers N` (N > 1) turns the process the operator started into a supervisor
(supervisor.py) that holds the RTMP port (port.py) and runs N copies of the ingest
role as child processes, each listening on that port with SO_REUSEPORT so the kernel
spreads connections across them. Each worker is an ingest node of its own in the
registry, in leases and in session rows (`<server-name>-w<i>`), so the existing
node-lost logic covers a worker that dies; the server name stays what channels are
mapped to and what encoders are given. A worker talks to its supervisor over its
standard input and output (link.py): nothing else is shared, so one crashing or
stuck worker costs only its own connections.
"""

from __future__ import annotations

NODE_ID_LENGTH = 64  # the width of the node columns in the database


def worker_node_id(server_name: str, index: int) -> str:
    """The node id of worker `index` (1-based) of a server: `<server-name>-w<index>`.

    The server name is shortened if needed so the id fits the database's node
    columns; ids must stay whole because a lost node's sessions are found by id.
    """
    suffix = f"-w{index}"
    return server_name[: NODE_ID_LENGTH - len(suffix)] + suffix
