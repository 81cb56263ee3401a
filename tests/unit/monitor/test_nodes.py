"""Dead-node detection on an in-process registry and an injected clock: nothing sleeps."""

from __future__ import annotations

from stream_sync.monitor.nodes import NodeWatcher
from stream_sync.state.inprocess import InProcessBus, InProcessRegistry
from stream_sync.state.interfaces import BusEvent, NodeInfo, NodeLost
from tests.support import BusRecorder, ManualClock

INTERVAL = 1.0
TTL = INTERVAL * 3  # what a node heartbeats with (Node._heartbeat)


class Cluster:
    """A registry, the nodes the database says carry streams, and what the watcher did."""

    def __init__(self, carrying: set[str]) -> None:
        self.clock = ManualClock()
        self.registry = InProcessRegistry(clock=self.clock, wall=self.clock)
        self.carrying = carrying
        self.closed: list[str] = []
        bus = InProcessBus()
        self.events = BusRecorder(bus)
        self.watcher = NodeWatcher(
            registry=self.registry,
            bus=bus,
            close_sessions=self._close,
            open_nodes=self._open,
            interval=INTERVAL,
            clock=self.clock,
        )

    async def _close(self, node: str) -> list[BusEvent]:
        self.closed.append(node)
        self.carrying.discard(node)
        return []

    async def _open(self) -> set[str]:
        return set(self.carrying)

    async def heartbeat(self, node: str) -> None:
        await self.registry.heartbeat(NodeInfo(node, f"rtmp://{node}/live", 10, 0.0), ttl=TTL)

    async def tick(self, seconds: float = INTERVAL) -> None:
        self.clock.now += seconds
        await self.watcher.check()


async def test_a_registry_that_restarted_empty_loses_no_live_node() -> None:
    cluster = Cluster(carrying={"a", "b"})
    for node in ("a", "b"):
        await cluster.heartbeat(node)
    await cluster.tick()
    for node in ("a", "b"):  # Redis restarted empty: nobody is registered
        await cluster.registry.remove(node)
    await cluster.tick()
    await cluster.tick()
    for node in ("a", "b"):  # each live node's next heartbeat, within its TTL
        await cluster.heartbeat(node)
    for _ in range(5):
        await cluster.tick()
    assert cluster.closed == []


async def test_a_node_that_stays_away_for_a_ttl_is_lost_once() -> None:
    cluster = Cluster(carrying={"a"})
    await cluster.heartbeat("a")
    await cluster.tick()
    await cluster.tick(TTL)  # its entry expired: first seen missing now
    await cluster.tick(TTL - 0.1)
    assert cluster.closed == []
    await cluster.tick(0.1)
    assert cluster.closed == ["a"]
    await cluster.events.wait_for(NodeLost, timeout=1)
    for _ in range(5):
        await cluster.tick()
    assert cluster.closed == ["a"]
    assert cluster.events.of(NodeLost) == [NodeLost("a")]


async def test_a_node_that_died_before_the_watcher_started_is_lost() -> None:
    cluster = Cluster(carrying={"gone"})  # its sessions are open, it never heartbeats
    await cluster.tick()
    await cluster.tick(TTL)
    assert cluster.closed == ["gone"]
