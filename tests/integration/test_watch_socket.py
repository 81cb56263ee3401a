"""The dashboard's WebSocket: who may open it, what it sends, and how it refuses.

A real node in the test's loop, a real WebSocket client; events are real bus events,
published by the test the way an ingest node publishes them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from stream_sync.audit import Actor
from stream_sync.db.models import Role
from stream_sync.node import Node
from stream_sync.state.interfaces import PublishStarted, StatusChanged, StreamStats

PASSWORD = "socket test passphrase"


async def sign_in(node: Node, email: str, role: Role) -> httpx.AsyncClient:
    await node.control.create_user(email=email, password=PASSWORD, role=role, actor=Actor.cli())
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}")
    login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200
    client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    return client


@pytest.fixture
async def admin(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    client = await sign_in(node, "ops@example.com", Role.ADMIN)
    yield client
    await client.aclose()


def socket(node: Node, client: httpx.AsyncClient | None, channel: str, **headers: str) -> Any:
    url = f"ws://127.0.0.1:{node.http_port}/api/channels/{channel}/live"
    extra = dict(headers)
    if client is not None:
        extra["Cookie"] = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    return connect(url, additional_headers=extra, open_timeout=5)


async def receive(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(10):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def close_code(ws: ClientConnection) -> int:
    """Read until the server closes; its close code (messages before it are skipped)."""
    try:
        while True:
            await receive(ws)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else -1  # -1: no close frame


async def channel_id(node: Node, public_id: str) -> int:
    from stream_sync.credentials import service

    async with node.sessions() as session:
        return (await service.find_channel(session, public_id)).id


async def test_snapshot_then_status_and_stats_in_order(
    node: Node, admin: httpx.AsyncClient
) -> None:
    created = (await admin.post("/api/channels", json={"name": "watched"})).json()
    internal = await channel_id(node, created["id"])
    async with socket(node, admin, created["id"]) as ws:
        first = await receive(ws)
        assert first["type"] == "snapshot"
        assert (first["status"], first["stats"], first["history"]) == ("offline", None, [])
        seq = first["seq"]
        now = time.time()
        await node.bus.publish(PublishStarted(internal, "k" * 12, "c1", 7, "n", seq + 1))
        await node.bus.publish(
            StatusChanged(internal, "live", 7, now, reason="started", seq=seq + 2)
        )
        measured = {"bitrate_1s": {"video": 2400.0, "audio": 128.0, "total": 2528.0}}
        await node.bus.publish(StreamStats(internal, 7, "n", now + 1, {}, {}, measured, {}))
        status = await receive(ws)
        assert (status["type"], status["status"], status["seq"]) == ("status", "live", seq + 2)
        stats = await receive(ws)
        assert stats["type"] == "stats"
        assert stats["point"] == [now + 1, 2400.0, 128.0]
        assert stats["stats"]["measurements"] == measured
    # A page that reconnects gets the chart's points back in its snapshot.
    async with socket(node, admin, created["id"]) as ws:
        again = await receive(ws)
        assert again["history"] == [[now + 1, 2400.0, 128.0]]


async def test_refusals_say_why_and_leak_nothing(node: Node, admin: httpx.AsyncClient) -> None:
    created = (await admin.post("/api/channels", json={"name": "private"})).json()
    async with socket(node, None, created["id"]) as ws:  # not signed in
        assert await close_code(ws) == 4401

    stranger = await sign_in(node, "someone@example.com", Role.STREAMER)
    try:
        for channel in (created["id"], "ch_doesnotexist", "x" * 5000):
            async with socket(node, stranger, channel) as ws:
                assert await close_code(ws) == 4404
    finally:
        await stranger.aclose()

    # Another site's page must not open a signed-in user's socket.
    with pytest.raises(InvalidStatus) as refused:
        async with socket(node, admin, created["id"], Origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403


async def test_oversized_client_messages_close_the_socket(
    node: Node, admin: httpx.AsyncClient
) -> None:
    created = (await admin.post("/api/channels", json={"name": "noisy"})).json()
    async with socket(node, admin, created["id"]) as ws:
        assert (await receive(ws))["type"] == "snapshot"
        await ws.send("x" * 100_000)  # dashboards send nothing; this is abuse
        assert await close_code(ws) == 1009  # message too big
