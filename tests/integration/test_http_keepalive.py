"""Idle HTTP connections outlive the client's: the server never closes one under a request.

httpx drops an idle connection after 5 s, which was also uvicorn's default: a request sent
at that moment met the server's close and failed with no response (a flaky dashboard call
in CI). The server now keeps idle connections for `HTTP_KEEP_ALIVE`.
"""

from __future__ import annotations

import asyncio

from stream_sync.node import HTTP_KEEP_ALIVE, Node

CLIENT_EXPIRY = 5.0  # httpx's keepalive_expiry, the most common client here
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head.split(b"\r\n", 1)[0]


async def test_an_idle_connection_still_answers_after_the_clients_expiry(node: Node) -> None:
    assert HTTP_KEEP_ALIVE > CLIENT_EXPIRY
    reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
    try:
        writer.write(REQUEST)
        assert await read_response(reader) == b"HTTP/1.1 200 OK"
        # Idle past what the old default allowed; a close would end the read below.
        idle = asyncio.ensure_future(reader.read(1))
        done, _ = await asyncio.wait({idle}, timeout=CLIENT_EXPIRY + 1.0)
        assert not done, "the server closed an idle keep-alive connection"
        writer.write(REQUEST)
        first = await idle
        assert first + await reader.readuntil(b"\r\n") == b"HTTP/1.1 200 OK\r\n"
    finally:
        writer.close()
