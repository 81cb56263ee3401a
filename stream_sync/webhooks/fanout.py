"""The fan-out: outbox rows in, one delivery row per endpoint that wants the event out.

It reads the outbox from a cursor of its own (``consumer_cursors`` "webhooks") and
writes the delivery rows and the new cursor in one transaction: a crash before the
commit leaves both as they were (the rows are read again), a crash after leaves
both written. Rows the reader returns again (its window behind the cursor, after
a restart) create nothing: a delivery is unique per endpoint and outbox row, and
its event id is derived from the outbox row, so it is the same however often the
row is read. An endpoint gets the events committed after it was registered.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync.db.models import (
    Channel,
    ConsumerCursor,
    PublishSession,
    WebhookDelivery,
    WebhookEndpoint,
)
from stream_sync.state import outbox
from stream_sync.state.interfaces import BusEvent

from .deliveries import DeliveryStatus
from .events import ChannelRef, WebhookEvent, body, webhook_of
from .policy import RetryPolicy

__all__ = ["CURSOR", "Fanout", "event_id"]

CURSOR = "webhooks"
# Event ids are UUIDv5 of the outbox row in this namespace (a constant: the row's
# id and commit time make the name unique).
_NAMESPACE = uuid.UUID("8f8a4a52-3c1b-4d8e-9a57-1e3f5f0b6c21")


def event_id(outbox_id: int, created_at: datetime) -> str:
    """The webhook event id of an outbox row: the same on every read of it."""
    return str(uuid.uuid5(_NAMESPACE, f"{outbox_id}@{created_at.astimezone(UTC).isoformat()}"))


@dataclass(frozen=True, slots=True)
class _Endpoint:
    id: int
    events: frozenset[str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _Webhook:
    outbox_id: int
    created_at: datetime
    kind: WebhookEvent
    channel_id: int | None
    seq: int | None
    session_id: int | None
    data: dict[str, Any]


class Fanout:
    """Turns the outbox into delivery rows; `run_once` is one batch (one task calls it)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.time,
        limit: int = 500,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._clock = clock
        self._limit = limit
        self._reader: outbox.OutboxReader | None = None
        self._saved = 0
        self.full = False  # the last batch hit the limit: more is waiting
        self.listening = True  # an endpoint was enabled at the last batch

    async def run_once(self) -> int:
        """Handle what was committed since the last call; returns the deliveries created.

        If anything fails, the next call starts again from the saved cursor.
        """
        self.full = False
        try:
            async with self._sessions() as session:
                reader = self._reader or await self._open(session)
                async with session.begin():
                    endpoints = await _endpoints(session)
                    self.listening = bool(endpoints)
                    if not endpoints:
                        # Nobody listens: skip to the newest row instead of reading and
                        # decoding the outbox window every second (an endpoint hears what
                        # is committed after it was registered; the window behind the
                        # cursor still catches late commits).
                        newest = await outbox.last_id(session)
                        if newest != reader.cursor:
                            reader = self._reader = outbox.OutboxReader(newest, limit=self._limit)
                    rows = await reader.poll_rows(session) if endpoints else []
                    webhooks = _webhooks(rows)
                    wanted = [w for w in webhooks if _subscribers(w, endpoints)]
                    channels = await _channels(session, wanted)
                    tests = await _test_sessions(session, wanted)
                values = self._deliveries(wanted, endpoints, channels, tests)
                cursor = reader.cursor
                created = 0
                if values or cursor != self._saved:
                    async with session.begin():  # starts by writing (see deliveries.claim)
                        if values:
                            created = await _insert(session, values)
                        await outbox.set_cursor(session, name=CURSOR, last_event_id=cursor)
        except BaseException:
            self._reader = None
            raise
        self._saved = cursor
        self.full = len(rows) >= self._limit
        return created

    async def _open(self, session: AsyncSession) -> outbox.OutboxReader:
        async with session.begin():
            saved = await session.scalar(
                select(ConsumerCursor.last_event_id).where(ConsumerCursor.name == CURSOR)
            )
        self._saved = saved or 0
        self._reader = outbox.OutboxReader(self._saved, limit=self._limit)
        return self._reader

    def _deliveries(
        self,
        webhooks: Sequence[_Webhook],
        endpoints: Sequence[_Endpoint],
        channels: dict[int, ChannelRef],
        tests: set[int],
    ) -> list[dict[str, Any]]:
        now = datetime.fromtimestamp(self._clock(), UTC)
        give_up_at = now + timedelta(seconds=self._policy.give_up_after)
        values: list[dict[str, Any]] = []
        for webhook in webhooks:
            if webhook.session_id is not None and webhook.session_id in tests:
                continue  # test mode is never announced
            identifier = event_id(webhook.outbox_id, webhook.created_at)
            channel = None
            if webhook.channel_id is not None:
                channel = channels.get(webhook.channel_id, ChannelRef(webhook.channel_id))
            text = body(
                event_id=identifier,
                kind=webhook.kind,
                created_at=webhook.created_at,
                channel=channel,
                seq=webhook.seq,
                data=webhook.data,
            )
            for endpoint in _subscribers(webhook, endpoints):
                values.append(
                    {
                        "endpoint_id": endpoint.id,
                        "outbox_id": webhook.outbox_id,
                        "event_id": identifier,
                        "type": str(webhook.kind),
                        "channel_id": webhook.channel_id,
                        "seq": webhook.seq,
                        "body": text,
                        "status": DeliveryStatus.PENDING,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "give_up_at": give_up_at,
                        "created_at": now,
                    }
                )
        return values


def _webhooks(rows: Sequence[tuple[int, datetime, BusEvent]]) -> list[_Webhook]:
    found = []
    for outbox_id, created_at, event in rows:
        mapped = webhook_of(event)
        if mapped is None:
            continue
        kind, data = mapped
        found.append(
            _Webhook(
                outbox_id,
                created_at,
                kind,
                getattr(event, "channel_id", None),
                getattr(event, "seq", None) or None,
                getattr(event, "session_id", None),
                data,
            )
        )
    return found


def _subscribers(webhook: _Webhook, endpoints: Sequence[_Endpoint]) -> list[_Endpoint]:
    return [
        endpoint
        for endpoint in endpoints
        if webhook.kind in endpoint.events and endpoint.created_at <= webhook.created_at
    ]


async def _endpoints(session: AsyncSession) -> list[_Endpoint]:
    rows = await session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.events, WebhookEndpoint.created_at).where(
            WebhookEndpoint.enabled.is_(True)
        )
    )
    return [_Endpoint(row.id, frozenset(row.events), row.created_at) for row in rows]


async def _channels(session: AsyncSession, webhooks: Sequence[_Webhook]) -> dict[int, ChannelRef]:
    ids = {w.channel_id for w in webhooks if w.channel_id is not None}
    if not ids:
        return {}
    rows = await session.execute(
        select(Channel.id, Channel.public_id, Channel.name).where(Channel.id.in_(ids))
    )
    return {row.id: ChannelRef(row.id, row.public_id, row.name) for row in rows}


async def _test_sessions(session: AsyncSession, webhooks: Sequence[_Webhook]) -> set[int]:
    ids = {w.session_id for w in webhooks if w.session_id is not None}
    if not ids:
        return set()
    rows = await session.scalars(
        select(PublishSession.id).where(PublishSession.id.in_(ids), PublishSession.test.is_(True))
    )
    return set(rows.all())


async def _insert(session: AsyncSession, values: list[dict[str, Any]]) -> int:
    """Insert, skipping (endpoint, outbox row) pairs that exist; returns rows inserted."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = (
        module.insert(WebhookDelivery)
        .on_conflict_do_nothing(index_elements=["endpoint_id", "outbox_id"])
        .returning(WebhookDelivery.id)
    )
    inserted = 0
    for start in range(0, len(values), 200):  # bounded statements: SQLite's variable limit
        result = await session.execute(statement, values[start : start + 200])
        inserted += len(result.all())
    return inserted
