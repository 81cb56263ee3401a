"""Noticing dead ingest nodes: their sessions must not stay "live" forever.

A node that stops heartbeating disappears from the registry after its TTL. Once it
has stayed away for one more TTL, the watcher announces NodeLost and hands the
node's channels to the status machine (monitor/lifecycle.py): they wait in
Reconnecting for their grace period, so an owner reconnecting to another node
continues the same session, and go offline otherwise.

Why wait that TTL: a Redis that restarted empty has an empty registry until each
live node's next heartbeat. Calling them lost at the first check that misses them
sends live streams into Reconnecting and then offline under their publishers, whose
later reports the machine ignores (the fault tests caught it). However short the
restart, every live node heartbeats again within the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ..db.engine import OutageLog
from ..state.errors import StateUnavailable
from ..state.interfaces import BusEvent, EventBus, NodeLost, NodeRegistry, NodeUp

log = logging.getLogger("stream_sync.monitor")
_FAILURES = OutageLog(log, "node watch")
CloseSessions = Callable[[str], Awaitable[list[BusEvent]]]  # node -> PublishEnded events
OpenNodes = Callable[[], Awaitable[set[str]]]  # nodes still carrying open sessions


class NodeWatcher:
    def __init__(
        self,
        *,
        registry: NodeRegistry,
        bus: EventBus,
        close_sessions: CloseSessions,
        open_nodes: OpenNodes,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._bus = bus
        self._close_sessions = close_sessions
        self._open_nodes = open_nodes
        self._interval = interval
        self._clock = clock
        self._patience = interval * 3  # the nodes' heartbeat TTL (Node._heartbeat)
        self.alive: set[str] = set()
        self._missing_since: dict[str, float] = {}

    async def run(self) -> None:
        await asyncio.sleep(self._interval * 2)  # let live nodes register first
        while True:
            try:
                await self.check()
            except StateUnavailable as exc:
                log.warning("node registry unreachable: %s", exc)
            except Exception as exc:
                _FAILURES.failed(exc)
            await asyncio.sleep(self._interval)

    async def check(self) -> None:
        """Nodes that appeared, and nodes that still carry streams but no longer heartbeat.

        The second set is read from the database each time, not remembered: a node
        that died before this watcher first saw it still has sessions to hand over.
        A node is lost once every check for a heartbeat TTL has missed it.
        """
        now = self._clock()
        current = {node.node_id for node in await self._registry.nodes()}
        for node in sorted(current - self.alive):
            log.info("ingest node %s is up", node)
            await self._publish(NodeUp(node))
        carrying = await self._open_nodes()
        missing = (self.alive | carrying | set(self._missing_since)) - current
        self._missing_since = {node: self._missing_since.get(node, now) for node in missing}
        for node in sorted(missing):
            if now - self._missing_since[node] < self._patience:
                continue
            log.warning("ingest node %s stopped heartbeating; its channels wait for grace", node)
            await self._publish(NodeLost(node))
            await self._close(node)
            del self._missing_since[node]
        self.alive = current

    async def _close(self, node: str) -> None:
        for event in await self._close_sessions(node):
            await self._publish(event)

    async def _publish(self, event: BusEvent) -> None:
        with contextlib.suppress(
            StateUnavailable
        ):  # lifecycle events are in the outbox; consumers catch up from there
            await self._bus.publish(event)
