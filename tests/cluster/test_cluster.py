"""The issue's proofs, with real processes: two ingest nodes, API, monitor, Redis, PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select, text

from stream_sync.db.models import PublishSession
from stream_sync.state.interfaces import KeyState, PublishEnded, PublishStarted, StatusChanged
from tests.databases import fresh_postgres_database
from tests.support import (
    RedisServer,
    RtmpTestClient,
    debian_ffmpeg,
    ffmpeg_command,
    run_process,
)

from .harness import CLI, Cluster

LOCK_TTL = 6.0  # the harness's setting; stale_after is 3 s


async def publish(url: str, seconds: float) -> asyncio.subprocess.Process:
    return await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=seconds))


async def test_exactly_one_of_two_simultaneous_publishers_is_live_every_time(
    cluster: Cluster,
) -> None:
    a, b = await cluster.start("ingest", "a"), await cluster.start("ingest", "b")
    channel = await cluster.channel("duo")
    assert cluster.bus is not None
    for attempt in range(20):
        first = await publish(f"{a.rtmp_url}/{channel.key}", 1)
        second = await publish(f"{b.rtmp_url}/{channel.key}", 1)
        (_, err1), (_, err2) = await asyncio.gather(first.communicate(), second.communicate())
        codes = sorted([first.returncode, second.returncode])
        assert codes[0] == 0, (attempt, err1.decode(), err2.decode())
        assert codes[1] != 0, (attempt, "both were live")
        loser = err2 if second.returncode else err1
        assert "already live" in loser.decode()
        await cluster.bus.wait_for(
            StatusChanged, lambda e, n=attempt: len(cluster.bus.of(PublishEnded)) == n + 1
        )
    assert len(cluster.bus.of(PublishStarted)) == 20


async def test_a_killed_node_frees_its_channel_and_the_monitor_closes_its_sessions(
    cluster: Cluster,
) -> None:
    a, b = await cluster.start("ingest", "a"), await cluster.start("ingest", "b")
    await cluster.start("monitor", "mon")
    channel = await cluster.channel("phoenix")
    assert cluster.bus is not None
    stream = await publish(f"{a.rtmp_url}/{channel.key}", 30)
    await cluster.bus.wait_for(StatusChanged, lambda e: e.status == "live" and e.node == "a")

    await a.process.kill()
    killed = time.monotonic()
    await asyncio.wait_for(stream.wait(), 10)
    # The lost node's channel waits in Reconnecting for its grace, then goes offline. (An
    # owner back on b before the monitor gave up on a simply continues: no Reconnecting.)
    waiting = await cluster.bus.wait_for(
        StatusChanged, lambda e: e.status == "reconnecting" and e.reason == "node lost", timeout=15
    )
    assert waiting.channel_id == channel.channel_id
    while True:
        retry = await publish(f"{b.rtmp_url}/{channel.key}", 1)
        await retry.communicate()
        if retry.returncode == 0:
            break
        assert time.monotonic() - killed < LOCK_TTL + 4, "the lock outlived its TTL"
    assert any(e.node == "b" for e in cluster.bus.of(PublishStarted))
    on_a = next(e for e in cluster.bus.of(PublishStarted) if e.node == "a")
    on_b = next(e for e in cluster.bus.of(PublishStarted) if e.node == "b")
    assert on_b.session_id == on_a.session_id  # the owner's reconnect, within grace
    assert cluster.store is not None
    async with cluster.store.sessions() as session:
        open_on_a = await session.scalar(
            select(func.count())
            .select_from(PublishSession)
            .where(PublishSession.node == "a", PublishSession.ended_at.is_(None))
        )
    assert open_on_a == 0


async def test_a_silent_publisher_is_taken_over_but_a_healthy_one_never_is(
    cluster: Cluster,
) -> None:
    a, b = await cluster.start("ingest", "a"), await cluster.start("ingest", "b")
    channel = await cluster.channel("frozen")
    assert cluster.bus is not None
    first = await publish(f"{a.rtmp_url}/{channel.key}", 60)
    await cluster.bus.wait_for(PublishStarted, lambda e: e.node == "a")
    for _ in range(3):  # healthy: refused every time, on either node
        for node in (a, b):
            intruder = await publish(f"{node.rtmp_url}/{channel.key}", 1)
            _, err = await intruder.communicate()
            assert intruder.returncode != 0
            assert "already live" in err.decode()

    os.kill(first.pid, signal.SIGSTOP)  # its socket stays open; it just stops sending
    frozen = time.monotonic()
    try:
        while not any(e.node == "b" for e in cluster.bus.of(PublishStarted)):
            assert time.monotonic() - frozen < 5.0, "the owner's reconnect was not let in"
            attempt = await publish(f"{b.rtmp_url}/{channel.key}", 2)
            await attempt.communicate()
        ended = await cluster.bus.wait_for(PublishEnded, lambda e: e.node == "a", timeout=5)
        # Cut by the takeover's StopRequested, or by its own lease check: whichever is first.
        assert ended.reason in ("taken over", "lease lost")
        assert "taken over from a/" in b.process.log  # not a lock that simply expired
    finally:
        os.kill(first.pid, signal.SIGCONT)
        first.kill()
        await first.wait()


async def test_a_reset_key_is_gone_from_every_node_within_a_second(cluster: Cluster) -> None:
    # The retries below measure the tombstone, not the abuse limits (test_abuse.py does).
    unguarded = {"failed_publish_limit": "1000", "max_refusal_delay": "0"}
    a, b = (
        await cluster.start("ingest", "a", **unguarded),
        await cluster.start("ingest", "b", **unguarded),
    )
    api = await cluster.start("api", "api")
    channel = await cluster.channel("leaky")
    assert cluster.bus is not None
    stream = await publish(f"{a.rtmp_url}/{channel.key}", 60)
    await cluster.bus.wait_for(PublishStarted)
    refused = await cluster.try_publish(b, channel.key)  # node b now has the key cached
    assert refused[-1].code == "NetStream.Publish.BadName"
    cached = await cluster.cached(channel.key_id)
    assert cached is not None
    assert cached.state is KeyState.VALID

    client = await cluster.admin_client(api)
    public_id = (await client.get("/api/channels")).json()[0]["id"]
    reset = await client.post(f"/api/channels/{public_id}/key/reset")
    assert reset.status_code == 200
    answered = time.monotonic()
    ended = await cluster.bus.wait_for(PublishEnded, timeout=5)
    assert time.monotonic() - answered < 1.0
    assert ended.reason == "key revoked"
    await asyncio.wait_for(stream.wait(), 5)
    tombstone = await cluster.cached(channel.key_id)
    assert tombstone is not None
    assert tombstone.state is KeyState.REVOKED

    before = [(await a.stats())["database_key_lookups"], (await b.stats())["database_key_lookups"]]
    for attempt in range(100):
        events = await cluster.try_publish(a if attempt % 2 else b, channel.key)
        assert events[-1].code == "NetStream.Publish.BadName"
    after = [(await a.stats())["database_key_lookups"], (await b.stats())["database_key_lookups"]]
    assert sum(after) - sum(before) <= 2  # the tombstone answers; the database rests
    await client.aclose()


async def test_a_full_node_sends_publishers_elsewhere(cluster: Cluster) -> None:
    a = await cluster.start("ingest", "a", capacity="2")
    b = await cluster.start("ingest", "b")
    channels = [await cluster.channel(f"busy-{n}") for n in range(3)]
    assert cluster.bus is not None
    streams = [await publish(f"{a.rtmp_url}/{c.key}", 60) for c in channels[:2]]
    await cluster.bus.wait_for(
        PublishStarted, lambda e: e.seq == 1 and e.channel_id == channels[1].channel_id
    )
    await cluster.bus.wait_for(PublishStarted, lambda e: e.channel_id == channels[0].channel_id)

    third = await publish(f"{a.rtmp_url}/{channels[2].key}", 5)
    _, err = await third.communicate()
    assert third.returncode != 0
    assert f"full; use {b.rtmp_url}" in err.decode()

    capable = await cluster.try_publish(a, channels[2].key, properties={"capsEx": 1.0})
    codes = [getattr(e, "code", "") for e in capable]
    assert "NetConnection.Connect.ReconnectRequest" in codes
    request = next(e for e in capable if e.code == "NetConnection.Connect.ReconnectRequest")
    assert request.info["tcUrl"] == b.rtmp_url
    moved = await cluster.try_publish(b, channels[2].key)
    assert type(moved[-1]).__name__ == "PublishStarted"
    for stream in streams:
        stream.kill()
        await stream.wait()


async def test_kick_ends_the_publish_but_keeps_the_key(cluster: Cluster) -> None:
    a = await cluster.start("ingest", "a")
    api = await cluster.start("api", "api")
    channel = await cluster.channel("kickable")
    assert cluster.bus is not None
    stream = await publish(f"{a.rtmp_url}/{channel.key}", 60)
    await cluster.bus.wait_for(StatusChanged, lambda e: e.status == "live")
    client = await cluster.admin_client(api)
    public_id = (await client.get("/api/channels")).json()[0]["id"]
    assert (await client.get(f"/api/channels/{public_id}")).json()["status"] == "live"
    assert (await client.post(f"/api/channels/{public_id}/kick")).status_code == 202
    ended = await cluster.bus.wait_for(PublishEnded, timeout=5)
    assert ended.reason == "kicked"
    await asyncio.wait_for(stream.wait(), 5)
    again = await publish(f"{a.rtmp_url}/{channel.key}", 1)
    _, err = await again.communicate()
    assert again.returncode == 0, err.decode()
    await client.aclose()


async def test_drain_moves_capable_publishers_and_closes_the_rest(cluster: Cluster) -> None:
    a, b = await cluster.start("ingest", "a"), await cluster.start("ingest", "b")
    plain, capable = await cluster.channel("plain"), await cluster.channel("capable")
    assert cluster.bus is not None
    stream = await publish(f"{a.rtmp_url}/{plain.key}", 60)
    await cluster.bus.wait_for(PublishStarted)
    mover = await RtmpTestClient.open(a.rtmp_port)
    await mover.connect(properties={"capsEx": 1.0})
    assert type((await mover.publish(capable.key))[-1]).__name__ == "PublishStarted"

    command = [*CLI, "ingest", "drain", "a", "--deadline", "1"]
    drain = await run_process([*command, "--data-dir", str(cluster.root / "cli")], env=cluster.env)
    _, err = await drain.communicate()
    assert drain.returncode == 0, err.decode()
    events = await mover.exchange(
        lambda evs: any(
            getattr(e, "code", "") == "NetConnection.Connect.ReconnectRequest" for e in evs
        )
    )
    request = next(
        e for e in events if getattr(e, "code", "") == "NetConnection.Connect.ReconnectRequest"
    )
    assert request.info["tcUrl"] == b.rtmp_url
    closed = await cluster.bus.wait_for(PublishEnded, lambda e: e.reason == "drained", timeout=10)
    assert closed.channel_id == plain.channel_id
    await asyncio.wait_for(stream.wait(), 5)
    refused = await publish(f"{a.rtmp_url}/{plain.key}", 1)
    _, err = await refused.communicate()
    assert refused.returncode != 0
    assert "full" in err.decode()
    mover.close()


async def test_sigterm_moves_capable_publishers_and_keeps_every_session_reconnecting(
    cluster: Cluster,
) -> None:
    a, b = await cluster.start("ingest", "a"), await cluster.start("ingest", "b")
    plain, capable = await cluster.channel("plain"), await cluster.channel("capable")
    bus = cluster.bus
    assert bus is not None
    stream = await publish(f"{a.rtmp_url}/{plain.key}", 60)
    await bus.wait_for(PublishStarted, lambda e: e.channel_id == plain.channel_id)
    mover = await RtmpTestClient.open(a.rtmp_port)
    await mover.connect(properties={"capsEx": 1.0})
    assert type((await mover.publish(capable.key))[-1]).__name__ == "PublishStarted"
    first = await bus.wait_for(PublishStarted, lambda e: e.channel_id == capable.channel_id)
    assert mover.conn is not None
    for frame in range(3):  # media: the channel goes Live
        mover.conn.send_video(frame * 33, b"\x17\x01\x00\x00\x00" + bytes(64))
    await mover.send(mover.conn.data_to_send())
    await bus.wait_for(
        StatusChanged, lambda e: e.channel_id == capable.channel_id and e.status == "live"
    )

    stopping = asyncio.get_running_loop().create_task(a.process.stop(timeout=20))
    reconnect = "NetConnection.Connect.ReconnectRequest"
    events = await mover.exchange(lambda evs: any(getattr(e, "code", "") == reconnect for e in evs))
    request = next(e for e in events if getattr(e, "code", "") == reconnect)
    assert request.info["tcUrl"] == b.rtmp_url
    mover.conn.unpublish()  # as an Enhanced RTMP client does: stop here, publish there
    await mover.send(mover.conn.data_to_send())
    mover.close()
    moved = await bus.wait_for(PublishEnded, lambda e: e.channel_id == capable.channel_id)
    assert moved.reason == "moved to another node"
    await bus.wait_for(
        StatusChanged, lambda e: e.channel_id == capable.channel_id and e.status == "reconnecting"
    )
    again = await RtmpTestClient.open(b.rtmp_port)
    await again.connect(properties={"capsEx": 1.0})
    assert type((await again.publish(capable.key))[-1]).__name__ == "PublishStarted"
    resumed = await bus.wait_for(
        PublishStarted, lambda e: e.channel_id == capable.channel_id and e.node == "b"
    )
    assert resumed.session_id == first.session_id  # one session, moved within its grace

    cut = await bus.wait_for(PublishEnded, lambda e: e.channel_id == plain.channel_id)
    assert cut.reason == "server shutdown"
    await bus.wait_for(
        StatusChanged, lambda e: e.channel_id == plain.channel_id and e.status == "reconnecting"
    )
    await asyncio.wait_for(stream.wait(), 10)
    assert await stopping == 0
    assert "publishers asked to move to " + b.rtmp_url in a.process.log
    again.close()


async def test_redis_restarting_empty_loses_no_stream_token_or_event(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as redis_server, fresh_postgres_database() as url:
        (tmp_path / "redis").mkdir()
        redis_server.start()
        await redis_server.wait_ready()
        async with Cluster(tmp_path, url, redis_server.url) as cluster:
            a = await cluster.start("ingest", "a")
            api = await cluster.start("api", "api")
            channel = await cluster.channel("resilient")
            assert cluster.bus is not None
            assert cluster.store is not None
            stream = await publish(f"{a.rtmp_url}/{channel.key}", 6)
            await cluster.bus.wait_for(PublishStarted)

            redis_server.kill()
            client = httpx.AsyncClient(base_url=api.http_url)
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            await a.process.wait_for_log("publish locks held in the database", timeout=10)
            intruder = await publish(f"{a.rtmp_url}/{channel.key}", 1)  # the rule holds
            _, err = await intruder.communicate()
            assert intruder.returncode != 0
            # Within a lock TTL of the outage the database grants nothing (state/failover.py).
            assert "Server busy" in err.decode() or "already live" in err.decode()
            redis_server.start()
            await redis_server.wait_ready()

            _, err = await stream.communicate()
            assert stream.returncode == 0, err.decode()  # the stream never noticed
            async with cluster.store.sessions() as session:
                tokens = (await session.scalars(select(PublishSession.fencing_token))).all()
            # The first publish's end is committed after FFmpeg exits: let its offline line
            # come before the mark, so the wait below can only see the second one's.
            await a.process.wait_for_log("channel=resilient status=offline")
            mark = len(a.process.lines)
            again = await publish(f"{a.rtmp_url}/{channel.key}", 1)
            assert await again.communicate()
            assert again.returncode == 0
            # The end is written after FFmpeg exits: the offline line follows the commit.
            await a.process.wait_for_log("channel=resilient status=offline", start=mark)
            async with cluster.store.sessions() as session:
                newest = await session.scalar(select(func.max(PublishSession.fencing_token)))
                rows = (
                    await session.execute(
                        text("SELECT type, payload FROM event_outbox ORDER BY id")
                    )
                ).all()
            assert newest is not None
            assert newest > max(t for t in tokens if t is not None)
            started = [r for r in rows if r.type == "PublishStarted"]
            ended = [r for r in rows if r.type == "PublishEnded"]
            assert len(started) == len(ended) == 2  # nothing lost while Redis was away
            await client.aclose()
