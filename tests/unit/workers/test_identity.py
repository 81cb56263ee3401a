"""Server name versus node id, the worker count rules, and the shared RTMP port."""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stream_sync import settings as settings_module
from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.node import Node, Role, open_store
from stream_sync.servers import service as servers
from stream_sync.settings import Settings, SettingsError, load_settings
from stream_sync.state.interfaces import NodeInfo
from stream_sync.workers import worker_node_id
from stream_sync.workers.port import PortReservation

REDIS = "redis://127.0.0.1:6379/0"


def test_a_worker_node_id_is_the_server_name_and_its_index_within_64_characters() -> None:
    assert worker_node_id("edge", 2) == "edge-w2"
    long = worker_node_id("e" * 64, 12)
    assert len(long) == 64
    assert long.endswith("-w12")


def test_one_worker_without_redis_and_more_only_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().worker_count() == 1
    assert Settings(workers=1).worker_count() == 1
    with pytest.raises(SettingsError, match=r"--workers 2 needs the Redis engine"):
        Settings(workers=2).worker_count()
    monkeypatch.setattr(settings_module, "available_cores", lambda: 6)
    assert Settings(redis_url=REDIS).worker_count() == 6
    assert Settings(redis_url=REDIS, workers=3).worker_count() == 3
    monkeypatch.setattr(settings_module, "available_cores", lambda: 200)
    assert Settings(redis_url=REDIS).worker_count() == 64


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_a_bad_worker_count_is_one_line(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^invalid --workers / STREAM_SYNC_WORKERS: "):
        load_settings(workers=value)


def test_the_reserved_port_is_shared_with_workers_only() -> None:
    reservation = PortReservation.take("127.0.0.1", 0)
    listeners: list[socket.socket] = []
    try:
        assert reservation.port > 0
        for _ in range(2):  # what each worker's create_server(reuse_port=True) does
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind(("127.0.0.1", reservation.port))
            listener.listen()
            listeners.append(listener)
        with socket.socket() as intruder, pytest.raises(OSError, match="in use") as refused:
            intruder.bind(("127.0.0.1", reservation.port))
        assert refused.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError, match="in use") as second:  # another supervisor, same port
            PortReservation.take("127.0.0.1", reservation.port)
        assert second.value.errno == errno.EADDRINUSE
        with socket.create_connection(("127.0.0.1", reservation.port)):
            pass  # a listening worker takes it; the reservation itself never listens
    finally:
        for listener in listeners:
            listener.close()
        reservation.close()


def test_a_port_in_use_is_refused_before_any_worker_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use") as refused:
            PortReservation.take("127.0.0.1", taken.getsockname()[1])
    assert refused.value.errno == errno.EADDRINUSE


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[Node]:
    """Worker 2 of 2 of server "edge" (not started: admission's view of it is enough)."""
    settings = Settings(data_dir=tmp_path, server_name="edge", capacity=5, capacity_mbps=9)
    async with open_store(settings) as store:
        node = Node(settings, store, frozenset({Role.INGEST}), ingest_workers=2, worker_index=2)
        try:
            yield node
        finally:
            await node.state.close()


def node_info(node_id: str, url: str, server: str = "", publishers: int = 0) -> NodeInfo:
    return NodeInfo(node_id, url, 10, 0, publishers=publishers, server=server)


async def test_a_worker_is_a_node_of_its_own_on_its_server(worker: Node) -> None:
    assert (worker.name, worker.server_name) == ("edge-w2", "edge")
    assert (worker.capacity, worker.capacity_mbps) == (3, 4.5)  # the server's, shared


async def test_room_elsewhere_means_another_server_never_a_sibling(worker: Node) -> None:
    registry = worker.state.registry
    await registry.heartbeat(node_info("edge-w1", "rtmp://edge/live", "edge"), ttl=60)
    assert await worker.elsewhere(None) is None  # the sibling has this server's URL
    await registry.heartbeat(node_info("far-w1", "rtmp://far/live", "far", 5), ttl=60)
    await registry.heartbeat(node_info("old", "rtmp://old/live"), ttl=60)  # no server field
    assert await worker.elsewhere(None) == "rtmp://old/live"  # the least loaded
    async with worker.sessions() as session:
        channel = await service.create_channel(
            session, secrets=worker.store.secrets, name="mapped", actor=Actor.cli()
        )
    for name, url in (("edge", "rtmp://edge/live"), ("far", "rtmp://far/live")):
        async with worker.sessions() as session:
            await servers.add_server(
                session, name=name, rtmp_url=url, region=None, capacity=10, actor=Actor.cli()
            )

    async def map_to(name: str) -> None:
        async with worker.sessions() as session:
            server_id = (await servers.get_server(session, ref=name)).id
        async with worker.sessions() as session:
            await service.set_channel_server(
                session, channel_id=channel.channel_id, server_id=server_id, actor=Actor.cli()
            )

    await map_to("far")
    assert await worker.elsewhere(channel.channel_id) == "rtmp://far/live"  # mapped first
    assert await worker.mapped_url(channel.channel_id) == "rtmp://far/live"
    await map_to("edge")  # mapped to this server: any of its workers takes it
    assert await worker.mapped_url(channel.channel_id) is None
