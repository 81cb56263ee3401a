"""The fan-out: each outbox event, once per endpoint that wants it, whatever happens."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync import audit
from stream_sync.credentials import ServerSecrets, create_channel
from stream_sync.db.models import OutboxEvent, PublishSession, WebhookDelivery, utcnow
from stream_sync.state import outbox
from stream_sync.state.interfaces import (
    BusEvent,
    HealthChanged,
    PublishRefusalsCounted,
    PublishStarted,
    StatusChanged,
    StreamKeyReset,
)
from stream_sync.webhooks import endpoints
from stream_sync.webhooks.fanout import CURSOR, Fanout, event_id
from stream_sync.webhooks.policy import RetryPolicy
from tests.support import ManualClock

ACTOR = audit.Actor.cli()
T = 1_800_000_000.0


async def _channel(sessions: async_sessionmaker[AsyncSession], secrets: ServerSecrets) -> int:
    async with sessions() as session:
        created = await create_channel(session, secrets=secrets, name="demo", actor=ACTOR)
    return created.channel_id


async def _endpoint(
    sessions: async_sessionmaker[AsyncSession], secrets: ServerSecrets, *events: str
) -> int:
    async with sessions() as session:
        created = await endpoints.create_endpoint(
            session, secrets=secrets, url="https://example.com/h", actor=ACTOR,
            events=list(events) or None,
        )  # fmt: skip
    return created.endpoint.id


async def _stage(sessions: async_sessionmaker[AsyncSession], *events: BusEvent) -> None:
    async with sessions() as session, session.begin():
        for event in events:
            await outbox.stage(session, event)


async def _deliveries(sessions: async_sessionmaker[AsyncSession]) -> list[WebhookDelivery]:
    async with sessions() as session:
        return list(
            (await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))).all()
        )


def _fanout(sessions: async_sessionmaker[AsyncSession]) -> Fanout:
    return Fanout(sessions, policy=RetryPolicy(), clock=ManualClock(T))


async def test_each_webhook_event_reaches_the_endpoints_that_want_it(
    sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> None:
    channel = await _channel(sessions, server_secrets)
    everything = await _endpoint(sessions, server_secrets)
    offline_only = await _endpoint(sessions, server_secrets, "stream.offline")
    await _stage(
        sessions,
        PublishStarted(channel, "KeyIdKeyId12", "c1", 1, "node-1"),  # not a webhook
        StatusChanged(channel, "live", 1, T, node="node-1"),
        HealthChanged(channel, 1, "bad", None, ["no_video"], T + 1),
        StatusChanged(channel, "reconnecting", 1, T + 2, grace_until=T + 32, reason="timeout"),
        StatusChanged(channel, "offline", 1, T + 32, reason="grace expired"),
        StreamKeyReset(channel, "NewKeyId1234", ["KeyIdKeyId12"]),
        PublishRefusalsCounted(channel, "KeyIdKeyId12", "192.0.2.7", "revoked_key", 3, T + 60),
    )
    assert await _fanout(sessions).run_once() == 7
    rows = await _deliveries(sessions)
    mine = [row for row in rows if row.endpoint_id == everything]
    assert [(row.type, row.seq) for row in mine] == [
        ("stream.live", 2),
        ("stream.health_changed", 3),
        ("stream.reconnecting", 4),
        ("stream.offline", 5),
        ("key.reset", 6),
        ("publish.refused", 7),
    ]
    assert [(row.endpoint_id, row.type) for row in rows if row.endpoint_id != everything] == [
        (offline_only, "stream.offline")
    ]
    offline = next(row for row in mine if row.type == "stream.offline")
    same = next(row for row in rows if row.endpoint_id == offline_only)
    assert (same.event_id, same.body) == (offline.event_id, offline.body)  # one event, two copies
    assert all(row.status == "pending" and row.attempts == 0 for row in rows)
    assert {row.give_up_at - row.created_at for row in rows} == {timedelta(days=1)}
    body = orjson.loads(mine[2].body)
    assert body == {
        "id": mine[2].event_id,
        "type": "stream.reconnecting",
        "created_at": body["created_at"],
        "channel": {"id": channel, "public_id": body["channel"]["public_id"], "name": "demo"},
        "seq": 4,
        "data": {
            "status": "reconnecting",
            "session_id": 1,
            "at": "2027-01-15T08:00:02.000Z",
            "grace_until": "2027-01-15T08:00:32.000Z",
            "reason": "timeout",
        },
    }
    assert orjson.loads(mine[5].body)["data"] == {
        "key_id": "KeyIdKeyId12", "address": "192.0.2.7", "reason": "revoked_key", "count": 3,
        "minute": "2027-01-15T08:01:00.000Z",
    }  # fmt: skip


async def test_test_mode_and_events_before_an_endpoint_existed_are_not_sent(
    sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> None:
    channel = await _channel(sessions, server_secrets)
    await _stage(sessions, StatusChanged(channel, "live", None, T))  # before any endpoint
    await _endpoint(sessions, server_secrets)
    async with sessions() as session, session.begin():
        rehearsal = PublishSession(channel_id=channel, key_id="k", node="n", test=True,
                                   started_at=utcnow(), ended_at=utcnow())  # fmt: skip
        session.add(rehearsal)
        await session.flush()
        await outbox.stage(session, StatusChanged(channel, "testing", rehearsal.id, T))
        await outbox.stage(session, StatusChanged(channel, "offline", rehearsal.id, T + 5))
        await outbox.stage(session, StatusChanged(channel, "offline", None, T + 6))
    assert await _fanout(sessions).run_once() == 1
    assert [orjson.loads(row.body)["seq"] for row in await _deliveries(sessions)] == [4]


async def test_reading_again_after_a_restart_creates_nothing_twice(
    sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> None:
    channel = await _channel(sessions, server_secrets)
    await _endpoint(sessions, server_secrets)
    await _stage(sessions, StatusChanged(channel, "live", 1, T))
    first = _fanout(sessions)
    assert await first.run_once() == 1
    assert await first.run_once() == 0
    await _stage(sessions, StatusChanged(channel, "offline", 1, T + 1))
    # A new process reads the window behind the saved cursor again.
    again = _fanout(sessions)
    assert await again.run_once() == 1
    rows = await _deliveries(sessions)
    assert [row.seq for row in rows] == [1, 2]
    async with sessions() as session:
        assert await outbox.get_cursor(session, name=CURSOR) == rows[-1].outbox_id
        created_at = await session.scalar(
            select(OutboxEvent.created_at).where(OutboxEvent.id == rows[0].outbox_id)
        )
    assert created_at is not None
    assert rows[0].event_id == event_id(rows[0].outbox_id, created_at)  # the same on every read


async def test_a_failed_write_loses_nothing_and_duplicates_nothing(
    sessions: async_sessionmaker[AsyncSession],
    server_secrets: ServerSecrets,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel = await _channel(sessions, server_secrets)
    await _endpoint(sessions, server_secrets)
    await _stage(sessions, StatusChanged(channel, "live", 1, T))
    fanout = _fanout(sessions)
    real = outbox.set_cursor

    async def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(outbox, "set_cursor", crash)
    with pytest.raises(OSError, match="disk full"):
        await fanout.run_once()
    assert await _deliveries(sessions) == []  # rolled back with the cursor
    monkeypatch.setattr(outbox, "set_cursor", real)
    await _stage(sessions, StatusChanged(channel, "offline", 1, T + 1))
    assert await fanout.run_once() == 2
    assert await fanout.run_once() == 0
    assert [row.seq for row in await _deliveries(sessions)] == [1, 2]


async def test_without_endpoints_the_outbox_is_skipped_not_read(
    sessions: async_sessionmaker[AsyncSession],
    server_secrets: ServerSecrets,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Most nodes register no webhook: the fan-out must not decode the outbox every second."""
    channel = await _channel(sessions, server_secrets)
    await _stage(sessions, StatusChanged(channel, "live", 1, T, node="node-1"))
    fanout = _fanout(sessions)
    read = 0
    poll_rows = outbox.OutboxReader.poll_rows

    async def counted(self: outbox.OutboxReader, session: AsyncSession) -> object:
        nonlocal read
        read += 1
        return await poll_rows(self, session)

    monkeypatch.setattr(outbox.OutboxReader, "poll_rows", counted)
    assert await fanout.run_once() == 0
    assert read == 0
    async with sessions() as session:
        assert await outbox.get_cursor(session, name=CURSOR) == await outbox.last_id(session)

    await _endpoint(sessions, server_secrets)
    await _stage(sessions, StatusChanged(channel, "offline", 1, T + 5, reason="stopped"))
    assert await fanout.run_once() == 1  # only what came after the endpoint
    assert read == 1
    assert [d.type for d in await _deliveries(sessions)] == ["stream.offline"]
