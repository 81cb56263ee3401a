"""Refused publishes, aggregated per minute: audit rows, and outbox events for known channels."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync import audit
from stream_sync.audit import refusals as refusals_module
from stream_sync.audit.refusals import RefusalAggregator
from stream_sync.credentials import ServerSecrets, create_channel, delete_channel
from stream_sync.db import create_engine, session_factory
from stream_sync.db.engine import OutageLog
from stream_sync.db.models import AuditEntry
from stream_sync.state import outbox
from stream_sync.state.interfaces import PublishRefusalsCounted
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


async def test_known_channels_get_one_event_per_key_address_reason_and_minute(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    async with sessions() as session:
        kept = await create_channel(session, secrets=SECRETS, name="kept", actor=audit.Actor.cli())
    async with sessions() as session:
        gone = await create_channel(session, secrets=SECRETS, name="gone", actor=audit.Actor.cli())
    clock = ManualClock(6000.0)  # minute 100
    refusals = RefusalAggregator(sessions, clock=clock)
    for _ in range(5):
        refusals.note(key_id=kept.key_id, channel_id=kept.channel_id, address="192.0.2.7",
                      reason="revoked_key")  # fmt: skip
    refusals.note(key_id=kept.key_id, channel_id=kept.channel_id, address="192.0.2.8",
                  reason="revoked_key")  # fmt: skip
    refusals.note(key_id=gone.key_id, channel_id=gone.channel_id, address="192.0.2.7",
                  reason="revoked_key")  # fmt: skip
    refusals.note(key_id=None, channel_id=None, address="192.0.2.9", reason="malformed_key")
    assert await refusals.flush() == 0  # the minute is not over
    async with sessions() as session:
        await delete_channel(session, channel_id=gone.channel_id, actor=audit.Actor.cli())
    clock.now += 60
    assert await refusals.flush() == 4

    async with sessions() as session:
        events = [event for _, event in await outbox.read_since(session, after_id=0)]
        rows = (await session.execute(select(AuditEntry.channel_id, AuditEntry.count).where(
            AuditEntry.action == "publish.refused"))).all()  # fmt: skip
    counted = [event for event in events if isinstance(event, PublishRefusalsCounted)]
    assert sorted((e.address, e.count, e.seq) for e in counted) == [
        ("192.0.2.7", 5, 1),
        ("192.0.2.8", 1, 2),
    ]
    assert {e.channel_id for e in counted} == {kept.channel_id}
    assert {e.minute for e in counted} == {6000.0}
    # The deleted channel's row is kept without its channel (its foreign key would fail).
    assert sorted(rows, key=str) == sorted(
        [(kept.channel_id, 5), (kept.channel_id, 1), (None, 1), (None, 1)], key=str
    )


async def test_a_database_outage_is_a_warning_and_the_counts_wait_for_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An outage is not a bug: no traceback, and nothing counted is lost."""
    monkeypatch.setattr(
        refusals_module, "_FAILURES", OutageLog(refusals_module.log, "refused-publish audit")
    )
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")  # nobody listens
    clock = ManualClock(6000.0)
    refusals = RefusalAggregator(session_factory(engine), clock=clock)
    refusals.note(key_id="KeyIdKeyId12", channel_id=None, address="192.0.2.7", reason="unknown_key")
    clock.now += 60
    caplog.set_level("WARNING", logger="stream_sync.audit")
    task = asyncio.create_task(refusals.run(interval=0.01))
    try:
        async with asyncio.timeout(10):
            while not caplog.records:  # noqa: ASYNC110 - the log is what is awaited
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.dispose()
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records][:1] == [
        (
            "WARNING",
            "refused-publish audit: the database is unreachable (ConnectionRefusedError)",
            None,
        )
    ]
    assert all(r.levelname == "WARNING" for r in caplog.records)
    assert refusals.pending() == 1
