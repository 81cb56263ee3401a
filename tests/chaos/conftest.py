"""Fixtures of the fault tests: their own PostgreSQL and Redis, never the shared ones.

The suite's shared servers must stay up for every other test, so these tests stop,
kill and restart private ones: a PostgreSQL cluster for the session (initdb once, a
fresh database per test) and a Redis per test. The replayed stream is encoded once
per session.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster
from tests.databases import blocking, fresh_postgres_database
from tests.support import PostgresServer, RedisServer, debian_ffmpeg

from .fleet import Fleet, sample_command

# The figures (30 s without Redis, 20 streams) in a full run; CI's wall-clock
# budget keeps the outages short. STREAM_SYNC_FAULTS_FULL=1 runs the full length.
FULL = os.environ.get("STREAM_SYNC_FAULTS_FULL", "") == "1"
OUTAGE = 30.0 if FULL else 8.0
STREAMS = 20


@dataclass
class Rig:
    """One test's private servers, the cluster's database on them, and its encoders."""

    root: Path
    redis: RedisServer
    postgres: PostgresServer
    database_url: str
    ffmpeg: str
    sample: Path

    def cluster(self, **settings: str) -> Cluster:
        return Cluster(self.root, self.database_url, self.redis.url, **settings)

    def fleet(self, cluster: Cluster) -> Fleet:
        return Fleet(cluster, self.ffmpeg, self.sample)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        server.start()
        blocking(server.wait_ready)
        yield server


@pytest.fixture(scope="session")
def sample_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "sample.flv"
    subprocess.run(sample_command(debian_ffmpeg(), path), check=True, timeout=120)
    return path


@pytest.fixture
async def rig(
    tmp_path: Path, postgres_server: PostgresServer, sample_flv: Path
) -> AsyncIterator[Rig]:
    if not postgres_server.running:  # a failed test left it stopped
        postgres_server.start()
    await postgres_server.wait_ready()
    (tmp_path / "redis").mkdir()
    with (
        RedisServer(tmp_path / "redis") as redis,
        fresh_postgres_database(postgres_server.url) as url,
    ):
        redis.start()
        await redis.wait_ready()
        try:
            yield Rig(tmp_path, redis, postgres_server, url, debian_ffmpeg(), sample_flv)
        finally:
            if not postgres_server.running:  # so that the database can be dropped
                postgres_server.start()
                await postgres_server.wait_ready()
