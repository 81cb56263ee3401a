"""The node's embedded uvicorn: a tick a second instead of ten, and a stop that does not wait
for the next tick."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import uvicorn

from stream_sync.node import _EmbeddedUvicorn


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


async def test_the_http_server_ticks_once_a_second_and_stops_at_once() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    server = _EmbeddedUvicorn(uvicorn.Config(hello, log_config=None, lifespan="off"))
    ticks: list[float] = []
    third = asyncio.Event()
    tick = server.on_tick

    async def counted(counter: int) -> bool:
        ticks.append(time.monotonic())
        if len(ticks) == 3:
            third.set()
        return await tick(counter)

    server.on_tick = counted  # type: ignore[method-assign]
    serving = asyncio.get_running_loop().create_task(server.serve([sock]))
    try:
        await asyncio.wait_for(third.wait(), 10)
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{sock.getsockname()[1]}/")
        asked = time.monotonic()
        server.exit()  # just after a tick: without a wake-up it would wait about a second
        await asyncio.wait_for(serving, 10)
        stopped_after = time.monotonic() - asked
    finally:
        serving.cancel()
        sock.close()
    assert ticks[2] - ticks[1] >= 0.9  # uvicorn's own loop ticks every 0.1 s
    assert answer.text == "hi"
    assert "date" in answer.headers  # what the tick is for
    assert stopped_after < 0.5
