"""The delivery log: the retry policy, and the reads and writes the sender and admins make.

A delivery is pending until a 2xx answer (delivered) or its deadline (failed).
Each attempt is claimed before it is sent: one UPDATE moves ``next_attempt_at``
past the attempt's timeout and counts the attempt, so a second sender cannot take
the same row and a sender that dies mid-attempt leaves a row that is retried once
the claim runs out. Times come from the caller (``now``), so tests need no sleeping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import CursorResult, Row, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.db.models import WebhookDelivery, WebhookEndpoint

from .errors import DeliveryNotFound, EndpointNotFound
from .policy import RetryPolicy

__all__ = [
    "Claimed",
    "DeliveryInfo",
    "DeliveryStatus",
    "RetryPolicy",
    "claim",
    "due_endpoints",
    "get_delivery",
    "list_deliveries",
    "record_failure",
    "record_success",
    "redeliver",
]

ERROR_MAX = 255
LIST_MAX = 500


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed for one attempt (``attempts`` counts it already)."""

    id: int
    endpoint_id: int
    event_id: str
    type: str
    body: str
    attempts: int
    give_up_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    id: int
    endpoint_id: int
    event_id: str
    type: str
    channel_id: int | None
    seq: int | None
    status: str
    attempts: int
    next_attempt_at: datetime | None  # while pending
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] | None = None  # the body, when asked for one delivery


_D = WebhookDelivery
_INFO_COLUMNS = (
    _D.id,
    _D.endpoint_id,
    _D.event_id,
    _D.type,
    _D.channel_id,
    _D.seq,
    _D.status,
    _D.attempts,
    _D.next_attempt_at,
    _D.last_attempt_at,
    _D.last_status,
    _D.last_error,
    _D.created_at,
    _D.delivered_at,
)


def _due(now: datetime) -> Any:
    return (_D.status == DeliveryStatus.PENDING) & (_D.next_attempt_at <= now)


async def due_endpoints(
    session: AsyncSession, *, now: datetime, exclude: Collection[int] = ()
) -> list[int]:
    """Enabled endpoints with a delivery due at ``now``, oldest due first. Read-only."""
    query = (
        select(_D.endpoint_id)
        .join(WebhookEndpoint, WebhookEndpoint.id == _D.endpoint_id)
        .where(_due(now), WebhookEndpoint.enabled.is_(True))
        .group_by(_D.endpoint_id)
        .order_by(func.min(_D.next_attempt_at))
    )
    if exclude:
        query = query.where(_D.endpoint_id.not_in(list(exclude)))
    async with session.begin():
        return list((await session.scalars(query)).all())


async def claim(
    session: AsyncSession,
    *,
    endpoint_id: int,
    now: datetime,
    lease: timedelta,
    limit: int,
    exclude: Collection[int] = (),
) -> list[Claimed]:
    """Claim up to ``limit`` of an endpoint's due deliveries for one attempt each. Commits.

    Oldest due first. ``exclude``: ids in flight in this process (their claim may
    have run out while a slow attempt still waits for its answer).
    """
    if limit < 1:
        return []
    query = (
        select(_D.id)
        .where(_D.endpoint_id == endpoint_id, _due(now))
        .order_by(_D.next_attempt_at, _D.id)
        .limit(limit)
    )
    if exclude:
        query = query.where(_D.id.not_in(list(exclude)))
    async with session.begin():
        ids = list((await session.scalars(query)).all())
    if not ids:
        return []
    # A transaction of its own that starts by writing: on SQLite a read transaction
    # that later writes fails at once if another writer committed in between.
    async with session.begin():
        rows = (
            await session.execute(
                update(_D)
                .where(_D.id.in_(ids), _due(now))
                .values(next_attempt_at=now + lease, attempts=_D.attempts + 1, last_attempt_at=now)
                .returning(_D.id, _D.event_id, _D.type, _D.body, _D.attempts, _D.give_up_at)
                .execution_options(synchronize_session=False)
            )
        ).all()
    claimed = [
        Claimed(row.id, endpoint_id, row.event_id, row.type, row.body, row.attempts, row.give_up_at)
        for row in rows
    ]
    return sorted(claimed, key=lambda c: ids.index(c.id))


async def record_success(
    session: AsyncSession, *, delivery_id: int, now: datetime, status: int
) -> None:
    """The receiver answered 2xx. Commits."""
    async with session.begin():
        await session.execute(
            update(_D)
            .where(_D.id == delivery_id)
            .values(
                status=DeliveryStatus.DELIVERED,
                delivered_at=now,
                last_status=status,
                last_error=None,
            )
            .execution_options(synchronize_session=False)
        )


async def record_failure(
    session: AsyncSession,
    *,
    claimed: Claimed,
    now: datetime,
    policy: RetryPolicy,
    error: str,
    status: int | None = None,
) -> DeliveryStatus:
    """An attempt failed: retry after the backoff, or give up past the deadline. Commits."""
    retry_at = now + policy.delay(claimed.attempts)
    outcome = DeliveryStatus.FAILED if retry_at > claimed.give_up_at else DeliveryStatus.PENDING
    async with session.begin():
        await session.execute(
            update(_D)
            .where(_D.id == claimed.id, _D.status == DeliveryStatus.PENDING)
            .values(
                status=outcome,
                next_attempt_at=retry_at if outcome is DeliveryStatus.PENDING else now,
                last_status=status,
                last_error=error[:ERROR_MAX],
            )
            .execution_options(synchronize_session=False)
        )
    return outcome


async def list_deliveries(
    session: AsyncSession,
    *,
    endpoint_id: int | None = None,
    status: DeliveryStatus | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[DeliveryInfo]:
    """Newest first; page with ``before_id``. Read-only."""
    query = select(*_INFO_COLUMNS).order_by(_D.id.desc()).limit(max(1, min(limit, LIST_MAX)))
    if endpoint_id is not None:
        query = query.where(_D.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(_D.status == status)
    if before_id is not None:
        query = query.where(_D.id < before_id)
    async with session.begin():
        if endpoint_id is not None and await session.get(WebhookEndpoint, endpoint_id) is None:
            raise EndpointNotFound(f"there is no webhook endpoint with id {endpoint_id}")
        return [_info(row) for row in (await session.execute(query)).all()]


async def get_delivery(session: AsyncSession, *, delivery_id: int) -> DeliveryInfo:
    """One delivery with its payload. Read-only."""
    async with session.begin():
        row = (
            await session.execute(select(*_INFO_COLUMNS, _D.body).where(_D.id == delivery_id))
        ).one_or_none()
    if row is None:
        raise DeliveryNotFound(f"there is no webhook delivery with id {delivery_id}")
    return dataclasses.replace(_info(row), payload=orjson.loads(row.body))


async def redeliver(
    session: AsyncSession,
    *,
    delivery_id: int,
    now: datetime,
    policy: RetryPolicy,
    actor: audit.Actor,
) -> DeliveryInfo:
    """Send a delivery again now, with a fresh deadline; same event id and body. Commits.

    For a receiver that lost what it was sent, or one that failed for a day and is
    fixed. Its attempts keep counting.
    """
    async with session.begin():
        result: CursorResult[Any] = await session.execute(  # type: ignore[assignment]
            update(_D)
            .where(_D.id == delivery_id)
            .values(
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
                give_up_at=now + timedelta(seconds=policy.give_up_after),
                delivered_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 0:
            raise DeliveryNotFound(f"there is no webhook delivery with id {delivery_id}")
        audit.add_entry(
            session,
            action=audit.AuditAction.WEBHOOK_REDELIVERED,
            actor=actor,
            details={"delivery_id": delivery_id},
        )
        row = (await session.execute(select(*_INFO_COLUMNS).where(_D.id == delivery_id))).one()
    return _info(row)


def _info(row: Row[*tuple[Any, ...]]) -> DeliveryInfo:
    pending = row.status == DeliveryStatus.PENDING
    return DeliveryInfo(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        type=row.type,
        channel_id=row.channel_id,
        seq=row.seq,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if pending else None,
        last_attempt_at=row.last_attempt_at,
        last_status=row.last_status,
        last_error=row.last_error,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
    )
