from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.node import Node, open_store
from stream_sync.settings import Settings
from tests.support import BusRecorder, debian_ffmpeg, ffmpeg_command, run_process


def node_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "host": "127.0.0.1",
        "rtmp_port": 0,
        "http_port": 0,
        "handshake_timeout": 1.0,
        "idle_timeout": 5.0,
        "shutdown_grace": 1.0,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_node(settings: Settings) -> AsyncIterator[Node]:
    """A whole `serve` node in the test's event loop."""
    async with open_store(settings) as store:
        running = Node(settings, store)
        await running.start()
        try:
            yield running
        finally:
            await running.stop()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """A whole `serve` node on free loopback ports."""
    async with running_node(node_settings(tmp_path / "data")) as running:
        yield running


@pytest.fixture
async def bus(node: Node) -> AsyncIterator[BusRecorder]:
    recorder = BusRecorder(node.bus)
    yield recorder
    await recorder.close()


@pytest.fixture
async def channel(node: Node) -> service.CreatedChannel:
    async with node.sessions() as session:
        return await service.create_channel(
            session, secrets=node.store.secrets, name="demo", actor=Actor.cli()
        )


async def publish_test_pattern(node: Node, key: str, seconds: float) -> None:
    """FFmpeg's moving test pattern (320x240, a keyframe a second) to the end, exit 0."""
    url = f"{node.rtmp_url}/{key}"
    proc = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=seconds))
    _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
