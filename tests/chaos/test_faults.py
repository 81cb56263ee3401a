"""Issue 9's faults with real processes: 20 live streams on two ingest nodes, an API and
a monitor, while Redis, PostgreSQL, an ingest node or the monitor goes away.

Every server here is the test's own (conftest.py). Figures for
benchmarks/results/faults.md are printed (`pytest -rP` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
from sqlalchemy import text

from stream_sync.ingest.recorder import RETRY_MAX
from stream_sync.state.interfaces import StatusChanged
from tests.cluster.harness import Cluster

from .conftest import FULL, OUTAGE, STREAMS, Rig
from .fleet import (
    errors,
    eventually,
    figures,
    media_bytes,
    none_open,
    outbox_keys,
    overlapping,
    publishes,
    sessions,
)

pytestmark = [pytest.mark.ffmpeg, pytest.mark.timeout(300 if FULL else 150)]
GRACE = 4.0  # seconds of reconnect grace where a test waits for it to run out
CLEAN = ["started {node}", "live: started", "offline: stopped", "ended {node}: client stopped"]


def clean_history(node: str) -> list[str]:
    return [step.format(node=node) for step in CLEAN]


async def refusal(cluster: Cluster, node_name: str, key: str) -> str:
    """Our own client's publish attempt; the refusal's description ("" if admitted)."""
    events = await cluster.try_publish(cluster.nodes[node_name], key)
    last = events[-1]
    if type(last).__name__ == "PublishStarted":
        return ""
    return str(last.info.get("description"))


async def test_redis_gone_for_the_outage_and_back_empty_keeps_every_stream(rig: Rig) -> None:
    async with rig.cluster() as cluster, rig.fleet(cluster) as fleet:
        a, b = await asyncio.gather(cluster.start("ingest", "a"), cluster.start("ingest", "b"))
        await asyncio.gather(cluster.start("api", "api"), cluster.start("monitor", "mon"))
        streams = await fleet.start([a, b], STREAMS, "redisless")
        assert cluster.bus is not None
        assert cluster.redis is not None
        before = {**await media_bytes(a), **await media_bytes(b)}
        assert len(before) == STREAMS

        rig.redis.kill()
        down = time.monotonic()
        # Until one lock TTL has passed, a Redis lease may be live without having moved to
        # the database yet: new publishes are refused, then admitted through the database.
        newcomer = await cluster.channel("redisless-new")
        late, refusals = await fleet.retry_until_live(b, newcomer)
        admitted_after = time.monotonic() - down
        assert refusals, "admitted while Redis leases could still be live"
        assert all("Server busy; try again shortly." in r for r in refusals), refusals
        for node in (a, b):
            await node.process.wait_for_log("publish locks held in the database")
        # The one-publisher rule holds through the database: an intruder is refused.
        intruder = await refusal(cluster, "b", streams[0].channel.key)
        assert "already live" in intruder
        await b.process.wait_for_log("channel=redisless-new status=live")
        await asyncio.sleep(max(0.0, down + OUTAGE - time.monotonic()))  # the outage itself
        during = {**await media_bytes(a), **await media_bytes(b)}

        rig.redis.start()  # empty: no locks, no key cache, no registry, no subscribers
        await rig.redis.wait_ready()
        outage = time.monotonic() - down
        back = time.monotonic()
        for node in (a, b):
            await node.process.wait_for_log("publish locks back in Redis", timeout=10)
        locks_back = time.monotonic() - back
        live = [*streams, late]
        assert cluster.store is not None
        for session in await sessions(cluster):
            lease = await cluster.redis.locks.holder(session.channel_id)
            assert lease is not None, f"channel {session.channel_id} has no lock in Redis"
            assert (lease.node, lease.token) == (session.node, session.fencing_token)

        async def none_in_database() -> bool:  # each lease moves back at its next renewal
            assert cluster.store is not None
            async with cluster.store.sessions() as db:
                return await db.scalar(text("SELECT count(*) FROM publish_locks")) == 0

        await eventually(none_in_database, timeout=5)
        assert all(p.running for p in live), "a publisher was cut"
        assert all(during[c] > before[c] for c in before), "media stopped during the outage"

        for publisher in live:
            await publisher.stop()
        await eventually(lambda: none_open(cluster))  # the bus may have missed some ends
        nodes = {p.channel.channel_id: p.node.name for p in live}
        found = await sessions(cluster)
        assert len(found) == len(live)
        for session in found:  # one session each, never cut, never "lost", every event kept
            assert session.steps == clean_history(nodes[session.channel_id]), session
        assert overlapping([*publishes(a), *publishes(b)]) == []
        assert errors(cluster.nodes.values()) == []
        missed = outbox_keys(found) - {
            (e.channel_id, e.seq) for e in cluster.bus.events if hasattr(e, "seq")
        }
        figures(
            "redis",
            streams=len(live),
            outage_s=round(outage, 1),
            newcomer_refused=len(refusals),
            newcomer_admitted_after_s=round(admitted_after, 2),
            intruder_refused=repr(intruder),
            locks_back_in_redis_s=round(locks_back, 2),
            lifecycle_events=len(outbox_keys(found)),
            missed_by_bus_kept_in_outbox=len(missed),
        )


async def api_status(client: httpx.AsyncClient) -> tuple[int, dict[str, object]]:
    reply = await client.get("/api/channels")
    return reply.status_code, reply.json()


async def test_postgres_restarted_under_live_streams_and_the_api_recovers_by_itself(
    rig: Rig,
) -> None:
    async with rig.cluster() as cluster, rig.fleet(cluster) as fleet:
        a, b = await asyncio.gather(cluster.start("ingest", "a"), cluster.start("ingest", "b"))
        api, _ = await asyncio.gather(cluster.start("api", "api"), cluster.start("monitor", "mon"))
        client = await cluster.admin_client(api)
        streams = await fleet.start([a, b], STREAMS, "dbless")
        # A key the nodes have seen (cached in Redis), free to publish again, and one never seen.
        seen, unseen = await cluster.channel("dbless-seen"), await cluster.channel("dbless-unseen")
        once = await fleet.publish(a, seen)
        await fleet.until_status({seen.channel_id}, "live")
        await once.stop()
        await fleet.until_status({seen.channel_id}, "offline")
        before = {**await media_bytes(a), **await media_bytes(b)}

        rig.postgres.stop()  # fast shutdown: every connection is cut
        down = time.monotonic()
        status, body = await api_status(client)
        assert status == 503, body
        assert body["error"]["code"] == "database_unavailable", body
        assert (await client.get("/readyz")).status_code == 503
        # Cached keys keep publishing: a seen key is admitted, its token from Redis...
        again, _ = await fleet.retry_until_live(a, seen)
        admitted_after = time.monotonic() - down
        await a.process.wait_for_log(r"fencing token \d+ from Redis: the database is unavailable")
        # ...an unseen one is refused, plainly.
        refused = await refusal(cluster, "b", unseen.key)
        assert refused == "Server busy; try again shortly."
        quitter = streams.pop()  # a publish that ends during the outage
        await quitter.stop()
        await asyncio.sleep(max(0.0, down + OUTAGE - time.monotonic()))  # the outage itself
        during = {**await media_bytes(a), **await media_bytes(b)}
        assert quitter.channel.channel_id not in during

        rig.postgres.start()
        await rig.postgres.wait_ready()
        outage = time.monotonic() - down
        assert cluster.store is not None
        await cluster.store.engine.dispose()  # the test's own connections died with it

        async def answers() -> bool:
            return (await api_status(client))[0] == 200

        recovered = await eventually(answers, timeout=15)  # seconds after PostgreSQL answered
        assert all(p.running for p in [*streams, again]), "a publisher was cut"
        kept_on = before.keys() - {quitter.channel.channel_id}
        assert all(during[c] > before[c] for c in kept_on), "media stopped during the outage"
        for publisher in [*streams, again]:
            await publisher.stop()
        # Every start and end, made during the outage or not, reaches the history once the
        # database is back: no session is left open, none is missing. A write that waited
        # out the outage retries on its own backoff (up to RETRY_MAX after PostgreSQL
        # answers), so "none open" alone can hold before a start made during it is written.
        nodes = {p.channel.channel_id: p.node.name for p in [*streams, quitter, again]}
        expected = sorted([*nodes, seen.channel_id])

        async def all_recorded() -> bool:
            found = await sessions(cluster)
            return len(found) == len(expected) and await none_open(cluster)

        with contextlib.suppress(TimeoutError):  # if not, the assertions below say what is missing
            await eventually(all_recorded, timeout=RETRY_MAX * 3)
        found = await sessions(cluster)
        assert sorted(s.channel_id for s in found) == expected
        for session in found:
            assert session.steps == clean_history(nodes[session.channel_id]), session
        assert overlapping([*publishes(a), *publishes(b)]) == []
        assert errors(cluster.nodes.values()) == []
        figures(
            "postgres",
            streams_through_outage=len(streams),
            ended_during=1,
            started_during=1,
            outage_s=round(outage, 1),
            seen_key_admitted_after_s=round(admitted_after, 2),
            api_during=f"{status} {body['error']['code']}",
            unseen_key_refused=repr(refused),
            api_recovered_after_s=round(recovered, 2),
            lifecycle_events=len(outbox_keys(found)),
        )
        await client.aclose()


async def test_a_killed_ingest_node_lets_its_channels_go_then_publish_elsewhere(
    rig: Rig,
) -> None:
    async with rig.cluster(grace_period=str(GRACE)) as cluster, rig.fleet(cluster) as fleet:
        a, b = await asyncio.gather(cluster.start("ingest", "a"), cluster.start("ingest", "b"))
        await cluster.start("monitor", "mon")
        streams = await fleet.start([a, b], STREAMS, "orphan")
        on_a = [p for p in streams if p.node is a]
        lost = {p.channel.channel_id for p in on_a}

        await a.process.kill()
        killed, died_at = time.monotonic(), time.time()
        await fleet.until_status(lost, "reconnecting")
        noticed = time.monotonic() - killed
        await fleet.until_status(lost, "offline", timeout=GRACE + 10)
        offline = time.monotonic() - killed
        assert cluster.bus is not None
        changes = [e for e in cluster.bus.of(StatusChanged) if e.channel_id in lost]
        assert {(e.status, e.reason) for e in changes if e.status != "live"} == {
            ("reconnecting", "node lost"),
            ("offline", "node lost"),
        }
        moved = [(await fleet.retry_until_live(b, p.channel))[0] for p in on_a]
        republished = time.monotonic() - killed
        await fleet.until_status(lost, "live", node="b")

        survivors = [p for p in streams if p.node is b]
        assert all(p.running for p in [*survivors, *moved])
        for publisher in [*survivors, *moved]:
            await publisher.stop()
        await eventually(lambda: none_open(cluster))
        found = await sessions(cluster)
        for session in found:
            if session.node == "a":  # its end came from the monitor, not from a dead node
                assert session.steps == [
                    "started a",
                    "live: started",
                    "reconnecting: node lost",
                    "offline: node lost",
                ], session
                assert session.end_reason == "node lost"
            else:
                assert session.steps == clean_history("b"), session
        assert len(found) == STREAMS + len(on_a)
        assert overlapping([*publishes(a, died_at), *publishes(b)]) == []
        figures(
            "ingest-kill",
            streams=STREAMS,
            on_killed_node=len(on_a),
            grace_s=GRACE,
            reconnecting_after_s=round(noticed, 2),
            offline_after_s=round(offline, 2),
            all_live_on_b_after_s=round(republished, 2),
            lifecycle_events=len(outbox_keys(found)),
        )


async def test_the_monitor_killed_and_restarted_leaves_no_session_open(rig: Rig) -> None:
    async with rig.cluster(grace_period=str(GRACE)) as cluster, rig.fleet(cluster) as fleet:
        a, b = await asyncio.gather(cluster.start("ingest", "a"), cluster.start("ingest", "b"))
        mon = await cluster.start("monitor", "mon")
        streams = await fleet.start([a, b], STREAMS, "unwatched")
        on_a = [p for p in streams if p.node is a]
        dropped, kept = on_a[: len(on_a) // 2], on_a[len(on_a) // 2 :]
        on_b = {p.channel.channel_id for p in streams if p.node is b}

        await mon.process.kill()  # nobody expires grace or watches nodes now
        for publisher in dropped:  # encoders that vanish: their channels wait for grace
            await publisher.kill()
        await b.process.kill()  # a node that dies unseen
        died_at = time.time()
        waiting = {p.channel.channel_id for p in dropped}
        await fleet.until_status(waiting, "reconnecting")
        assert cluster.bus is not None
        deadline = max(
            e.grace_until or 0.0
            for e in cluster.bus.of(StatusChanged)
            if e.channel_id in waiting and e.status == "reconnecting"
        )
        await asyncio.sleep(max(0.0, deadline - time.time()) + 1)  # grace runs out unseen
        assert not await none_open(cluster)

        restarted = time.monotonic()
        await cluster.start("monitor", "mon")  # the same data folder, after a kill -9
        await fleet.until_status(waiting, "offline")
        expired = time.monotonic() - restarted
        await fleet.until_status(on_b, "offline", timeout=GRACE + 15)
        handed_over = time.monotonic() - restarted
        for publisher in kept:
            await publisher.stop()
        await eventually(lambda: none_open(cluster))

        found = await sessions(cluster)
        assert len(found) == STREAMS
        histories = {s.channel_id: s for s in found}
        for publisher in dropped:
            session = histories[publisher.channel.channel_id]
            assert session.steps == [
                "started a",
                "live: started",
                "reconnecting: connection lost",
                "ended a: peer closed",
                "offline: grace expired",
            ], session
        for channel_id in on_b:
            assert histories[channel_id].steps == [
                "started b",
                "live: started",
                "reconnecting: node lost",
                "offline: node lost",
            ], histories[channel_id]
        for publisher in kept:
            assert histories[publisher.channel.channel_id].steps == clean_history("a")
        assert overlapping([*publishes(a), *publishes(b, died_at)]) == []
        figures(
            "monitor-kill",
            streams=STREAMS,
            encoders_dropped=len(dropped),
            node_killed_unseen_streams=len(on_b),
            expired_after_restart_s=round(expired, 2),
            node_lost_offline_after_restart_s=round(handed_over, 2),
            lifecycle_events=len(outbox_keys(found)),
        )
