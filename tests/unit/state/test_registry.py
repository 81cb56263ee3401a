"""The node registry on both engines: heartbeats with a TTL, capacity for placement."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from stream_sync.state.interfaces import NodeInfo

from .conftest import SHORT_TTL, Engine

TTL = 30.0


def node(node_id: str = "ingest-a", **changes: Any) -> NodeInfo:
    info = NodeInfo(
        node_id, f"rtmp://{node_id}.example:1935/live", capacity=10, capacity_mbps=200.0
    )
    return dataclasses.replace(info, **changes)


def without_stamp(info: NodeInfo) -> NodeInfo:
    return dataclasses.replace(info, heartbeat_at=0.0)


async def test_a_heartbeat_registers_the_node(engine: Engine) -> None:
    assert await engine.registry.nodes() == []
    sent = node(publishers=3, mbps=12.5, draining=True)
    await engine.registry.heartbeat(sent, TTL)
    [registered] = await engine.registry.nodes()
    assert without_stamp(registered) == sent
    assert registered.heartbeat_at > 1_600_000_000  # stamped by the registry, epoch seconds


async def test_a_worker_node_carries_its_server_name(engine: Engine) -> None:
    await engine.registry.heartbeat(node("edge-w2", server="edge"), TTL)
    await engine.registry.heartbeat(node("solo"), TTL)  # a single process: no server field
    worker, solo = await engine.registry.nodes()
    assert (worker.node_id, worker.server_name) == ("edge-w2", "edge")
    assert (solo.node_id, solo.server_name) == ("solo", "solo")


async def test_a_heartbeat_refreshes_the_node(engine: Engine) -> None:
    await engine.registry.heartbeat(node(publishers=1), TTL)
    [first] = await engine.registry.nodes()
    engine.tick()
    await engine.registry.heartbeat(node(publishers=2), TTL)
    [second] = await engine.registry.nodes()
    assert second.publishers == 2
    assert second.heartbeat_at > first.heartbeat_at


async def test_nodes_lists_every_node_in_id_order(engine: Engine) -> None:
    for node_id in ("ingest-c", "ingest-a", "ingest-b"):
        await engine.registry.heartbeat(node(node_id), TTL)
    assert [n.node_id for n in await engine.registry.nodes()] == [
        "ingest-a",
        "ingest-b",
        "ingest-c",
    ]


async def test_a_silent_node_disappears(engine: Engine) -> None:
    await engine.registry.heartbeat(node("ingest-a"), SHORT_TTL)
    await engine.registry.heartbeat(node("ingest-b"), 60.0)

    async def gone() -> bool:
        return [n.node_id for n in await engine.registry.nodes()] == ["ingest-b"]

    await engine.let_expire(SHORT_TTL, gone)
    await engine.registry.heartbeat(node("ingest-a"), TTL)  # and it comes back when it calls
    assert [n.node_id for n in await engine.registry.nodes()] == ["ingest-a", "ingest-b"]


async def test_heartbeats_keep_a_node_alive(engine: Engine) -> None:
    await engine.registry.heartbeat(node(), 10.0)
    await engine.age(8.0, "node", "ingest-a")
    await engine.registry.heartbeat(node(), 10.0)
    await engine.age(8.0, "node", "ingest-a")
    assert [n.node_id for n in await engine.registry.nodes()] == ["ingest-a"]


async def test_remove(engine: Engine) -> None:
    await engine.registry.heartbeat(node("ingest-a"), TTL)
    await engine.registry.heartbeat(node("ingest-b"), TTL)
    await engine.registry.remove("ingest-a")
    await engine.registry.remove("never-registered")
    assert [n.node_id for n in await engine.registry.nodes()] == ["ingest-b"]


@pytest.mark.parametrize(
    ("changes", "room"),
    [
        ({}, True),
        ({"publishers": 9}, True),
        ({"publishers": 10}, False),
        ({"draining": True}, False),
        ({"mbps": 199.9}, True),
        ({"mbps": 200.0}, False),
        ({"capacity_mbps": 0.0, "mbps": 10_000.0}, True),  # 0 = no bandwidth limit
    ],
)
async def test_has_room_survives_the_registry(
    engine: Engine, changes: dict[str, Any], room: bool
) -> None:
    await engine.registry.heartbeat(node(**changes), TTL)
    [registered] = await engine.registry.nodes()
    assert registered.has_room is room
