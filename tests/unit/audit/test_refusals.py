"""Refused publishes, aggregated per minute into audit rows."""

from __future__ import annotations

import os

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync import audit
from stream_sync.audit.refusals import RefusalAggregator
from stream_sync.credentials import ServerSecrets, create_channel, delete_channel
from stream_sync.db import session_factory
from stream_sync.db.models import AuditEntry
from tests.support import ManualClock

SECRETS = ServerSecrets(os.urandom(32), os.urandom(32))


async def test_a_channel_deleted_within_the_minute_keeps_its_rows_without_it(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    async with sessions() as session:
        gone = await create_channel(session, secrets=SECRETS, name="gone", actor=audit.Actor.cli())
    clock = ManualClock(6000.0)
    refusals = RefusalAggregator(sessions, clock=clock)
    refusals.note(key_id=gone.key_id, channel_id=gone.channel_id, address="192.0.2.7",
                  reason="revoked_key")  # fmt: skip
    async with sessions() as session:
        await delete_channel(session, channel_id=gone.channel_id, actor=audit.Actor.cli())
    clock.now += 60
    assert await refusals.flush() == 1
    assert refusals.pending() == 0
    async with sessions() as session:
        rows = (await session.execute(select(AuditEntry.channel_id, AuditEntry.key_id).where(
            AuditEntry.action == "publish.refused"))).all()  # fmt: skip
    assert [tuple(row) for row in rows] == [(None, gone.key_id)]
