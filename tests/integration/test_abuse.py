"""The abuse limits on a live node: attackers on 127.0.0.2 and up, encoders on 127.0.0.1.

Every limit here is per source address, so each test checks both halves: the
attacker's address is refused, and a publisher from another address is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.credentials.keys import KEY_PREFIX, base62_token
from stream_sync.node import Node
from stream_sync.rtmp.client import PublishStarted, StatusReceived
from tests.integration.conftest import node_settings, running_node
from tests.support import RtmpTestClient

SWEEP = 0.5
SLACK = 0.01  # event loop timers may fire a few milliseconds early


@contextlib.asynccontextmanager
async def guarded_node(tmp_path: Path, **limits: object) -> AsyncIterator[Node]:
    async with running_node(node_settings(tmp_path / "data", **limits)) as node:
        yield node


async def make_channel(node: Node, name: str = "demo") -> service.CreatedChannel:
    async with node.sessions() as session:
        return await service.create_channel(
            session, secrets=node.store.secrets, name=name, actor=Actor.cli()
        )


async def try_publish(port: int, key: str, source: str) -> tuple[str, float]:
    """Publish from `source`: "started" or the refusal's description, and the wait."""
    client = await RtmpTestClient.open(port, source)
    try:
        await client.connect()
        began = time.monotonic()
        events = await client.publish(key)
        waited = time.monotonic() - began
        if any(isinstance(e, PublishStarted) for e in events):
            return "started", waited
        status = next(e for e in events if isinstance(e, StatusReceived))
        return str(status.info.get("description")), waited
    finally:
        client.close()


def wrong_key(key_id: str | None = None) -> str:
    return f"{KEY_PREFIX}{key_id or base62_token(12)}_{base62_token(43)}"


async def test_connections_per_address_are_limited(tmp_path: Path) -> None:
    async with guarded_node(tmp_path, max_connections_per_address=3) as node:
        port = node.rtmp_port
        held = [await RtmpTestClient.open(port, "127.0.0.2") for _ in range(3)]
        for client in held:
            await client.connect()  # accepted: the server has counted each one
        extra = await RtmpTestClient.open(port, "127.0.0.2")
        began = time.monotonic()
        await extra.wait_closed(2)  # closed at accept, before a handshake byte
        assert time.monotonic() - began < 1
        assert await extra.reader.read() == b""

        channel = await make_channel(node)  # another address streams as if nothing happened
        assert (await try_publish(port, channel.key, "127.0.0.1"))[0] == "started"
        assert node.ingest.guard.counts["address_full"] == 1

        held[0].close()
        await held[0].wait_closed(2)
        again = await RtmpTestClient.open(port, "127.0.0.2")  # a closed one frees its place
        assert await again.connect()  # answered: accepted
        for client in (*held, extra, again):
            client.close()


async def test_the_total_is_limited_per_process(tmp_path: Path) -> None:
    async with guarded_node(tmp_path, max_connections=2) as node:
        port = node.rtmp_port
        held = [await RtmpTestClient.open(port, f"127.0.0.{i}") for i in (2, 3)]
        for client in held:
            await client.connect()
        extra = await RtmpTestClient.open(port, "127.0.0.4")
        await extra.wait_closed(2)
        assert node.ingest.guard.counts["server_full"] == 1
        for client in (*held, extra):
            client.close()


async def test_failed_publishes_block_the_address_without_the_database(tmp_path: Path) -> None:
    limits = {"failed_publish_limit": 3, "max_refusal_delay": 0.3, "block_duration": 60}
    async with guarded_node(tmp_path, **limits) as node:
        channel = await make_channel(node)
        port, checker = node.rtmp_port, node.checker
        refusals = [await try_publish(port, wrong_key(), "127.0.0.2") for _ in range(3)]
        assert [text for text, _ in refusals] == ["Invalid stream key."] * 3
        assert refusals[0][1] < 0.3
        assert refusals[2][1] >= 0.3 - SLACK  # the third one waited

        lookups = checker.database_lookups
        blocked, waited = await try_publish(port, channel.key, "127.0.0.2")  # even a good key
        assert blocked.startswith("Too many failed attempts from this address; try again in")
        assert waited >= 0.3 - SLACK
        assert checker.database_lookups == lookups  # refused without looking at the key

        assert (await try_publish(port, channel.key, "127.0.0.1"))[0] == "started"
        assert node.ingest.guard.counts["address_blocked"] == 2  # the block, then the refusal


async def test_a_stranger_guessing_at_a_key_id_cannot_lock_out_its_owner(
    tmp_path: Path,
) -> None:
    limits = {"failed_key_limit": 3, "max_refusal_delay": 1.0, "failed_publish_limit": 100}
    async with guarded_node(tmp_path, **limits) as node:
        channel = await make_channel(node)
        port = node.rtmp_port
        guesses = [
            await try_publish(port, wrong_key(channel.key_id), f"127.0.0.{2 + i}") for i in range(5)
        ]
        assert all(text == "Invalid stream key." for text, _ in guesses)
        assert [waited >= 1.0 - SLACK for _, waited in guesses] == [False] * 3 + [True] * 2
        assert node.ingest.guard.counts["key_attacked"] == 2

        text, waited = await try_publish(port, channel.key, "127.0.0.1")
        assert text == "started"
        assert waited < 1.0  # the owner does not pay for the stranger's guesses


async def test_a_retrying_encoder_is_slowed_down(tmp_path: Path) -> None:
    async with guarded_node(tmp_path, failed_publish_limit=100) as node:
        channel = await make_channel(node)
        async with node.sessions() as session:
            await service.reset_key(
                session,
                secrets=node.store.secrets,
                channel_id=channel.channel_id,
                actor=Actor.cli(),
            )
        waits = [(await try_publish(node.rtmp_port, channel.key, "127.0.0.2"))[1] for _ in range(4)]
        assert max(waits[:2]) < 0.5  # a revoked key is refused at once, twice
        assert 0.5 - SLACK <= waits[2] < 1.0 - SLACK <= waits[3] < 1.5  # then later and later


async def test_a_connection_that_never_publishes_is_closed(tmp_path: Path) -> None:
    async with guarded_node(tmp_path, publish_timeout=1.0) as node:
        client = await RtmpTestClient.open(node.rtmp_port, "127.0.0.2")
        began = time.monotonic()
        await client.connect()
        for _ in range(3):  # never idle: a Window Acknowledgement Size every 0.4 s
            await client.send(bytes((2, 0, 0, 0, 0, 0, 4, 5, 0, 0, 0, 0)) + (2_500_000).to_bytes(4))
            await asyncio.sleep(0.4)
        await client.wait_closed(1 + 2 * SWEEP + 1)
        assert 1.0 - SLACK <= time.monotonic() - began <= 1 + 2 * SWEEP + 0.5
        assert node.ingest.guard.counts["publish_timeout"] == 1


async def test_limits_reach_the_metrics(tmp_path: Path) -> None:
    async with guarded_node(tmp_path, max_connections_per_address=1) as node:
        first = await RtmpTestClient.open(node.rtmp_port, "127.0.0.2")
        await first.connect()
        second = await RtmpTestClient.open(node.rtmp_port, "127.0.0.2")
        await second.wait_closed(2)
        await node.state.registry.heartbeat(node._node_info(), ttl=10)  # don't wait for one
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{node.http_port}/metrics")).text
        assert (
            f'stream_sync_ingest_guard_total{{node="{node.name}",reason="address_full"}} 1.0'
            in (metrics)
        )
        first.close()
        second.close()


async def test_http_requests_are_rate_limited_per_address(tmp_path: Path) -> None:
    async with guarded_node(tmp_path, api_rate_limit=1, api_burst=5) as node:
        url = f"http://127.0.0.1:{node.http_port}/healthz"
        flood = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=flood) as attacker, httpx.AsyncClient() as user:
            codes = [(await attacker.get(url)).status_code for _ in range(8)]
            assert codes[:5] == [200] * 5
            assert set(codes[5:]) == {429}
            refused = await attacker.get(url)
            assert refused.json()["error"]["code"] == "rate_limited"
            assert refused.headers["retry-after"] == "1"
            assert (await user.get(url)).status_code == 200  # another address: a full bucket
            metrics = (await user.get(f"http://127.0.0.1:{node.http_port}/metrics")).text
        assert 'stream_sync_http_refused_total{reason="rate_limited"} 4.0' in metrics
