"""Fencing: a node frozen past its lease finds its token stale when it wakes.

The process holding a live stream's lock is stopped (SIGSTOP) for twice the lock TTL
while the owner publishes again on another node, then resumed (SIGCONT). Everything
it believed while frozen is stale: it must drop its publisher within a second and
leave the session, now carried by the other node, as it was.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from stream_sync.state.interfaces import PublishStarted

from .conftest import Rig
from .fleet import errors, eventually, figures, none_open, publishes, sessions

pytestmark = [pytest.mark.ffmpeg, pytest.mark.timeout(120)]
LOCK_TTL = 6.0  # the harness's lock_ttl


async def test_a_frozen_lock_holder_wakes_to_a_stale_token_and_lets_go(rig: Rig) -> None:
    async with rig.cluster() as cluster, rig.fleet(cluster) as fleet:
        a, b = await asyncio.gather(cluster.start("ingest", "a"), cluster.start("ingest", "b"))
        channel = await cluster.channel("fenced")
        first = await fleet.publish(a, channel)
        await fleet.until_status({channel.channel_id}, "live")
        assert cluster.bus is not None

        os.kill(a.process.proc.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            second, refusals = await fleet.retry_until_live(b, channel)
            taken_after = time.monotonic() - frozen
            assert all("already live" in r for r in refusals), refusals  # until a went silent
            await asyncio.sleep(max(0.0, frozen + 2 * LOCK_TTL - time.monotonic()))
        finally:
            woke = time.time()
            os.kill(a.process.proc.pid, signal.SIGCONT)
        await a.process.wait_for_log(r"publish ended channel=fenced ", timeout=5)
        (held,) = publishes(a)
        dropped_after = held.end - woke
        assert dropped_after < 1.0, held
        assert held.reason in ("lease lost", "taken over"), held  # its own check, or b's word
        await asyncio.wait_for(first.process.wait(), 10)  # a closed its connection
        started_b = await cluster.bus.wait_for(PublishStarted, lambda e: e.node == "b")

        async def a_recorded_its_end() -> bool:
            (session,) = await sessions(cluster)
            return any(step.startswith("ended a") for step in session.steps)

        await eventually(a_recorded_its_end)
        (session,) = await sessions(cluster)
        # One session, owned by a, then by b with a larger token; a's late end changes
        # nothing: no Reconnecting, no Offline, b still live.
        assert session.steps == [
            "started a",
            "live: started",
            "started b",
            f"ended a: {held.reason}",
        ], session
        assert (session.node, session.status, session.ended) == ("b", "live", False)
        (taking,) = publishes(b)
        assert held.token < taking.token == session.fencing_token
        assert started_b.session_id == session.id
        assert second.running
        assert (await b.stats())["publishers"] == 1

        await second.stop()
        await eventually(lambda: none_open(cluster))
        (session,) = await sessions(cluster)
        assert session.steps[-2:] == ["offline: stopped", "ended b: client stopped"]
        assert errors([a, b]) == []
        figures(
            "fencing",
            frozen_s=2 * LOCK_TTL,
            refusals_before_takeover=len(refusals),
            taken_over_after_s=round(taken_after, 2),
            dropped_after_resume_s=round(dropped_after, 3),
            reason=repr(held.reason),
        )
