"""The sender against a real HTTP receiver: signatures, retries on an injected clock,
independence of events and endpoints, and a restart between attempts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stream_sync import audit
from stream_sync.credentials import ServerSecrets, create_channel
from stream_sync.db import create_engine, session_factory
from stream_sync.db.models import WebhookDelivery
from stream_sync.state import outbox
from stream_sync.state.interfaces import StatusChanged
from stream_sync.webhooks import deliveries, endpoints
from stream_sync.webhooks.fanout import Fanout
from stream_sync.webhooks.policy import RetryPolicy, SenderLimits
from stream_sync.webhooks.sender import WebhookSender
from tests.receiver import Receiver, receiving
from tests.support import ManualClock

ACTOR = audit.Actor.cli()
POLICY = RetryPolicy(first=10, cap=3600, give_up_after=86_400)
LIMITS = SenderLimits(timeout=5)


class Harness:
    """A channel, a fan-out and a sender on an injected clock, over one database."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        secrets: ServerSecrets,
        clock: ManualClock,
        limits: SenderLimits = LIMITS,
    ) -> None:
        self.sessions = sessions
        self.secrets = secrets
        self.clock = clock
        self.fanout = Fanout(sessions, policy=POLICY, clock=clock)
        self.sender = WebhookSender(sessions, secrets, policy=POLICY, limits=limits, clock=clock)
        self.channel = 0

    async def setup(self) -> None:
        async with self.sessions() as session:
            created = await create_channel(session, secrets=self.secrets, name="demo", actor=ACTOR)
        self.channel = created.channel_id

    async def endpoint(self, url: str, secret: str | None = None) -> endpoints.CreatedEndpoint:
        async with self.sessions() as session:
            return await endpoints.create_endpoint(
                session, secrets=self.secrets, url=url, actor=ACTOR, secret=secret
            )

    async def event(self, status: str = "live") -> None:
        async with self.sessions() as session, session.begin():
            await outbox.stage(session, StatusChanged(self.channel, status, 1, self.clock()))
        await self.fanout.run_once()

    async def attempt(self) -> int:
        """Start what is due, and wait until every result is recorded."""
        started = await self.sender.send_due()
        await self.sender.idle()
        return started

    async def rows(self) -> list[WebhookDelivery]:
        async with self.sessions() as session:
            query = select(WebhookDelivery).order_by(WebhookDelivery.id)
            return list((await session.scalars(query)).all())


@pytest.fixture
async def harness(
    sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> AsyncIterator[Harness]:
    made = Harness(sessions, server_secrets, ManualClock(1_800_000_000.0))
    await made.setup()
    yield made
    await made.sender.close()


async def test_a_delivery_is_signed_and_logged(harness: Harness, receiver: Receiver) -> None:
    created = await harness.endpoint(receiver.url())
    await harness.event("live")
    assert await harness.attempt() == 1
    (request,) = receiver.received
    (row,) = await harness.rows()
    assert request.path == "/hooks"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["stream-sync-event-type"] == "stream.live"
    assert request.event_id == row.event_id == request.json["id"]
    assert request.body.decode() == row.body
    assert request.verified(created.secret, now=harness.clock())
    assert not request.verified("whsec_someone-else-entirely-0000", now=harness.clock())
    assert not request.verified(created.secret, now=harness.clock() + 301)  # a late replay
    assert request.headers["stream-sync-signature"].startswith("t=1800000000,v1=")
    assert (row.status, row.attempts, row.last_status, row.last_error) == (
        "delivered",
        1,
        200,
        None,
    )
    assert await harness.attempt() == 0  # nothing is sent twice


async def test_three_failures_then_delivered_on_the_fourth_with_backoff(
    harness: Harness, receiver: Receiver
) -> None:
    created = await harness.endpoint(receiver.url())
    receiver.fail_first = 3
    await harness.event("live")
    waits = []
    for attempt in (1, 2, 3):
        assert await harness.attempt() == 1
        (row,) = await harness.rows()
        assert (row.status, row.attempts, row.last_status, row.last_error) == (
            "pending", attempt, 500, "HTTP 500"
        )  # fmt: skip
        wait = row.next_attempt_at.timestamp() - harness.clock()
        waits.append(wait)
        harness.clock.now += wait - 1
        assert await harness.attempt() == 0  # not before it is due
        harness.clock.now += 1
    assert waits == [10, 20, 40]
    assert await harness.attempt() == 1
    (row,) = await harness.rows()
    assert (row.status, row.attempts, row.last_status) == ("delivered", 4, 200)
    assert [r.answered for r in receiver.received] == [500, 500, 500, 200]
    assert len({r.event_id for r in receiver.received}) == 1  # the same event every time
    for request in receiver.received:
        signed_at = int(request.headers["stream-sync-signature"][2:12])
        assert request.verified(created.secret, now=signed_at)


async def test_past_the_deadline_a_delivery_fails(harness: Harness, receiver: Receiver) -> None:
    await harness.endpoint(receiver.url())
    receiver.status = 503
    await harness.event("live")
    attempts = 0
    while True:
        attempts += 1
        await harness.attempt()
        (row,) = await harness.rows()
        if row.status != "pending":
            break
        harness.clock.now = row.next_attempt_at.timestamp()
    assert (row.status, row.last_error) == ("failed", "HTTP 503")
    # 10 s doubling (the 10th attempt 5,110 s in), then hourly, for a day: 32 attempts.
    assert attempts == row.attempts == 10 + (86_400 - 5_110) // 3600 == 32
    assert harness.clock() - 1_800_000_000.0 <= 86_400


async def test_a_failing_event_does_not_hold_back_the_next(
    harness: Harness, receiver: Receiver
) -> None:
    await harness.endpoint(receiver.url())
    receiver.fail_when = lambda body: body["data"]["status"] == "live"
    await harness.event("live")
    await harness.event("reconnecting")
    await harness.event("offline")
    assert await harness.attempt() == 3
    statuses = {row.type: row.status for row in await harness.rows()}
    assert statuses == {
        "stream.live": "pending",
        "stream.reconnecting": "delivered",
        "stream.offline": "delivered",
    }
    # Receivers put them in order by seq, whatever order they arrive in.
    seqs = sorted(r.json["seq"] for r in receiver.delivered())
    assert seqs == [2, 3]


async def test_a_slow_endpoint_delays_neither_another_endpoint_nor_its_own_other_slots(
    sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> None:
    clock = ManualClock(1_800_000_000.0)
    harness = Harness(sessions, server_secrets, clock, SenderLimits(timeout=30, per_endpoint=2))
    await harness.setup()
    async with receiving() as slow, receiving() as fast:
        slow.hold = asyncio.Event()
        await harness.endpoint(slow.url())
        await harness.endpoint(fast.url())
        for status in ("live", "reconnecting", "offline"):
            await harness.event(status)
        assert await harness.sender.send_due() == 4  # two slots each
        await fast.wait_count(2, timeout=5)
        await harness.sender.wait_in_flight(2)
        assert await harness.sender.send_due() == 1  # the fast one's third; the slow one is full
        await fast.wait_count(3, timeout=5)
        await harness.sender.wait_in_flight(2)
        assert slow.received == []
        slow.hold.set()
        await harness.sender.idle()
        assert await harness.attempt() == 1  # its third, once a slot was free
        await harness.sender.close()
    assert {row.status for row in await harness.rows()} == {"delivered"}


async def test_a_restart_between_attempts_loses_nothing(
    engine: AsyncEngine, server_secrets: ServerSecrets, receiver: Receiver
) -> None:
    clock = ManualClock(1_800_000_000.0)
    before = Harness(session_factory(engine), server_secrets, clock)
    await before.setup()
    created = await before.endpoint(receiver.url())
    receiver.fail_first = 1
    await before.event("live")
    assert await before.attempt() == 1
    await before.sender.close()
    # Another process, its own connections, the same database.
    url = engine.url.render_as_string(hide_password=False)
    reopened = create_engine(url)
    try:
        after = Harness(session_factory(reopened), server_secrets, clock)
        after.channel = before.channel
        assert await after.attempt() == 0
        clock.now += 10
        assert await after.attempt() == 1
        await after.sender.close()
        (row,) = await after.rows()
    finally:
        await reopened.dispose()
    assert (row.status, row.attempts) == ("delivered", 2)
    assert [r.answered for r in receiver.received] == [500, 200]
    assert receiver.received[0].event_id == receiver.received[1].event_id
    assert receiver.received[1].verified(created.secret, now=clock())


async def test_a_sender_that_died_mid_attempt_tries_again_once_its_claim_ran_out(
    harness: Harness, receiver: Receiver
) -> None:
    await harness.endpoint(receiver.url())
    await harness.event("live")
    async with harness.sessions() as session:
        (_,) = await deliveries.claim(
            session, endpoint_id=1, now=harness.sender._now(), lease=timedelta(seconds=40), limit=5
        )  # a claim whose attempt never reported back
    assert await harness.attempt() == 0
    harness.clock.now += 40
    assert await harness.attempt() == 1
    (row,) = await harness.rows()
    assert (row.status, row.attempts) == ("delivered", 2)


async def test_errors_are_recorded_without_the_url(harness: Harness, receiver: Receiver) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await harness.endpoint(f"http://127.0.0.1:{port}/services/T0KEN-in-the-path")
    await harness.endpoint(receiver.url("/moved"))
    receiver.status = 302
    await harness.event("live")
    assert await harness.attempt() == 2
    refused, moved = await harness.rows()
    assert refused.status == "pending"
    assert refused.last_status is None
    assert refused.last_error
    assert "T0KEN" not in refused.last_error
    assert (moved.last_status, moved.last_error) == (302, "HTTP 302")  # redirects not followed


async def test_while_no_endpoint_is_enabled_the_loop_does_not_look(
    harness: Harness, receiver: Receiver
) -> None:
    await harness.endpoint(receiver.url())
    await harness.event("live")  # due now
    listening = False
    asked = 0
    rounds = asyncio.Event()

    def active() -> bool:
        nonlocal asked
        asked += 1
        if asked == 3:
            rounds.set()
        return listening

    task = asyncio.get_running_loop().create_task(harness.sender.run(0.01, active=active))
    try:
        await asyncio.wait_for(rounds.wait(), 10)
        (row,) = await harness.rows()
        assert (row.status, row.attempts, receiver.received) == ("pending", 0, [])
        listening = True  # the fan-out saw an enabled endpoint
        harness.sender.wake()
        (request,) = await receiver.wait_count(1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert request.event_id == row.event_id
