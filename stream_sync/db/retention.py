"""Retention: old audit rows, publish sessions, outbox events, webhook deliveries and
expired sign-ins go.

Deletes run in batches, each its own short transaction, so a large purge never
holds SQLite's single write lock long enough to stall key checks and sign-ins.
Deleting audit rows is allowed by the append-only trigger (it refuses UPDATE only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, CursorResult, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from stream_sync.db.models import (
    AuditEntry,
    AuthSession,
    OutboxEvent,
    PublishSession,
    WebhookDelivery,
    utcnow,
)

DEFAULT_AUDIT_DAYS = 365
DEFAULT_SESSIONS_DAYS = 90
# The outbox is for catching up, not history: a consumer away longer starts afresh.
DEFAULT_OUTBOX_DAYS = 7
# The webhook delivery log: long enough to look into what a receiver missed.
DEFAULT_DELIVERIES_DAYS = 30
BATCH_SIZE = 5000


@dataclass(frozen=True, slots=True)
class PurgeResult:
    audit_entries: int
    publish_sessions: int
    auth_sessions: int
    outbox_events: int = 0
    webhook_deliveries: int = 0


async def purge(
    session: AsyncSession,
    *,
    now: datetime | None = None,
    audit_days: int = DEFAULT_AUDIT_DAYS,
    sessions_days: int = DEFAULT_SESSIONS_DAYS,
    outbox_days: int = DEFAULT_OUTBOX_DAYS,
    deliveries_days: int = DEFAULT_DELIVERIES_DAYS,
    batch_size: int = BATCH_SIZE,
) -> PurgeResult:
    """Delete what is past retention; 0 days keeps that kind forever. Commits per batch.

    Audit rows older than ``audit_days``, ended publish sessions that ended more
    than ``sessions_days`` ago (live ones are never touched), outbox events older
    than ``outbox_days``, webhook deliveries no longer pending made more than
    ``deliveries_days`` ago, and web sign-in sessions past their expiry. Pass an
    idle session.
    """
    if min(audit_days, sessions_days, outbox_days, deliveries_days) < 0:
        raise ValueError("retention days must be 0 (keep forever) or more")
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    now = now or utcnow()
    audit_count = 0
    if audit_days:
        cutoff = now - timedelta(days=audit_days)
        audit_count = await _delete_batches(
            session, AuditEntry.id, AuditEntry.at < cutoff, batch_size
        )
    sessions_count = 0
    if sessions_days:
        cutoff = now - timedelta(days=sessions_days)
        sessions_count = await _delete_batches(
            session,
            PublishSession.id,
            PublishSession.ended_at.is_not(None) & (PublishSession.ended_at < cutoff),
            batch_size,
        )
    outbox_count = 0
    if outbox_days:
        cutoff = now - timedelta(days=outbox_days)
        outbox_count = await _delete_batches(
            session, OutboxEvent.id, OutboxEvent.created_at < cutoff, batch_size
        )
    deliveries_count = 0
    if deliveries_days:
        cutoff = now - timedelta(days=deliveries_days)
        deliveries_count = await _delete_batches(
            session,
            WebhookDelivery.id,
            (WebhookDelivery.status != "pending") & (WebhookDelivery.created_at < cutoff),
            batch_size,
        )
    auth_count = await _delete_batches(
        session, AuthSession.id, AuthSession.expires_at < now, batch_size
    )
    return PurgeResult(
        audit_entries=audit_count,
        publish_sessions=sessions_count,
        auth_sessions=auth_count,
        outbox_events=outbox_count,
        webhook_deliveries=deliveries_count,
    )


async def _delete_batches(
    session: AsyncSession,
    id_column: InstrumentedAttribute[int],
    condition: ColumnElement[bool],
    batch_size: int,
) -> int:
    table = id_column.class_
    total = 0
    while True:
        batch = select(id_column).where(condition).order_by(id_column).limit(batch_size)
        async with session.begin():
            result = await session.execute(
                delete(table)
                .where(id_column.in_(batch.scalar_subquery()))
                .execution_options(synchronize_session=False)
            )
        deleted = result.rowcount if isinstance(result, CursorResult) else 0
        total += deleted
        if deleted < batch_size:
            return total
