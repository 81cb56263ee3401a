"""Webhooks from a whole node: a real FFmpeg publish, a real receiver on 127.0.0.1.

Every lifecycle transition arrives once, signed, in sequence order; a node
restarted between two attempts loses nothing. Retries run on an injected clock,
so nothing waits for a real backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.db.models import OutboxEvent, WebhookDelivery
from stream_sync.node import Node, open_store
from stream_sync.settings import Settings
from stream_sync.state.codec import decode_event
from stream_sync.state.interfaces import StatusChanged
from stream_sync.webhooks import endpoints
from tests.integration.conftest import node_settings
from tests.receiver import Received, Receiver, receiving
from tests.support import ManualClock, debian_ffmpeg, ffmpeg_command, run_process

pytestmark = pytest.mark.ffmpeg
CLI = Actor.cli()


@contextlib.asynccontextmanager
async def started_node(settings: Settings, clock: ManualClock | None = None) -> AsyncIterator[Node]:
    """A whole `serve` node; with ``clock``, its webhook retries run on it."""
    async with open_store(settings) as store:
        node = Node(settings, store)
        if clock is not None and node.webhooks is not None:
            node.webhooks.clock = clock
        await node.start()
        try:
            yield node
        finally:
            await node.stop()


async def register(node: Node, receiver: Receiver) -> endpoints.CreatedEndpoint:
    async with node.sessions() as session:
        return await endpoints.create_endpoint(
            session, secrets=node.store.secrets, url=receiver.url(), actor=CLI
        )


def types(received: list[Received]) -> list[str]:
    return [r.json["type"] for r in received]


def has(kind: str) -> object:
    return lambda received: kind in types(received)


async def test_every_transition_of_a_real_publish_is_delivered_once_in_order(
    tmp_path: Path,
) -> None:
    settings = node_settings(tmp_path / "data", grace_period=2.0, health_change_after=1.0)
    async with receiving() as receiver, started_node(settings) as node:
        async with node.sessions() as session:
            channel = await service.create_channel(
                session, secrets=node.store.secrets, name="demo", actor=CLI
            )
        created = await register(node, receiver)
        url = f"{node.rtmp_url}/{channel.key}"
        encoder = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=60))
        try:
            await receiver.wait_for(has("stream.live"))
            await receiver.wait_for(has("stream.health_changed"))
        finally:
            encoder.kill()  # abrupt: the channel waits in reconnecting for its grace
            await encoder.communicate()
        await receiver.wait_for(has("stream.reconnecting"))
        await receiver.wait_for(has("stream.offline"))

        await node.control.reset_key(channel_id=channel.channel_id, actor=CLI)
        await receiver.wait_for(has("key.reset"))
        refused = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=5))
        _, stderr = await asyncio.wait_for(refused.communicate(), 10)
        assert refused.returncode != 0, stderr.decode()
        await node.refusals.flush(everything=True)  # the minute's aggregate, without the wait
        await receiver.wait_for(has("publish.refused"))
        assert node.webhooks is not None
        await node.webhooks.sender.idle()

        async with node.sessions() as session:
            rows = (await session.scalars(select(WebhookDelivery))).all()
            outbox = (
                await session.execute(
                    select(OutboxEvent.seq, OutboxEvent.payload).where(
                        OutboxEvent.channel_id == channel.channel_id
                    )
                )
            ).all()

    received = receiver.received
    kinds = [kind for kind in types(received) if kind != "stream.health_changed"]
    assert kinds == [
        "stream.live", "stream.reconnecting", "stream.offline", "key.reset", "publish.refused"
    ]  # fmt: skip
    health = [r.json for r in received if r.json["type"] == "stream.health_changed"]
    assert health[0]["data"]["previous"] is None
    assert all(r.answered == 200 and r.verified(created.secret) for r in received)
    ids = [r.event_id for r in received]
    assert len(set(ids)) == len(ids)  # each event exactly once
    seqs = [r.json["seq"] for r in received]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert all(r.json["channel"]["name"] == "demo" for r in received)
    assert sorted((row.event_id, row.status, row.attempts) for row in rows) == sorted(
        (event_id, "delivered", 1) for event_id in ids
    )
    # Every status change the outbox holds for the channel was delivered, by its seq.
    announced = {
        seq for seq, payload in outbox
        if isinstance(event := decode_event(payload), StatusChanged)
        and event.status in ("live", "reconnecting", "offline")
    }  # fmt: skip
    assert announced == {
        r.json["seq"] for r in received if r.json["type"].startswith("stream.")
    } - {h["seq"] for h in health}
    refusal = next(r.json for r in received if r.json["type"] == "publish.refused")
    assert refusal["data"]["key_id"] == channel.key_id
    assert refusal["data"]["count"] == 1


async def test_a_restart_between_attempts_loses_nothing(tmp_path: Path) -> None:
    settings = node_settings(tmp_path / "data")
    clock = ManualClock(1_800_000_000.0)
    async with receiving() as receiver:
        receiver.fail_first = 1
        async with started_node(settings, clock) as node:
            async with node.sessions() as session:
                channel = await service.create_channel(
                    session, secrets=node.store.secrets, name="demo", actor=CLI
                )
            created = await register(node, receiver)
            await node.control.reset_key(channel_id=channel.channel_id, actor=CLI)
            await receiver.wait_count(1)
            assert node.webhooks is not None
            await node.webhooks.sender.idle()  # the failure is recorded
        # While the server is down, a key is reset from the command line.
        async with open_store(settings) as store, store.sessions() as session:
            await service.reset_key(
                session, secrets=store.secrets, channel_id=channel.channel_id, actor=CLI
            )
        clock.now += 10  # the first retry is due
        async with started_node(settings, clock) as node:
            await receiver.wait_count(3)
            assert node.webhooks is not None
            await node.webhooks.sender.idle()
            async with node.sessions() as session:
                rows = (
                    await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))
                ).all()

    first, second = rows
    assert [(r.status, r.attempts) for r in rows] == [("delivered", 2), ("delivered", 1)]
    answered = {(r.event_id, r.answered) for r in receiver.received}
    assert answered == {(first.event_id, 500), (first.event_id, 200), (second.event_id, 200)}
    assert [r.json["seq"] for r in receiver.delivered()] in ([2, 4], [4, 2])
    assert all(r.verified(created.secret, now=clock()) for r in receiver.received)
