"""The ingest node's recorder: publishes that come together are written together."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync import audit
from stream_sync.audit.refusals import RefusalAggregator
from stream_sync.credentials import ServerSecrets, create_channel, delete_channel
from stream_sync.db import session_factory
from stream_sync.ingest import recorder as recorder_module
from stream_sync.ingest.recorder import DatabaseRecorder
from stream_sync.monitor.lifecycle import Summary
from stream_sync.monitor.status import EndKind
from stream_sync.state.interfaces import PublishEnded, PublishStarted

SECRETS = ServerSecrets(os.urandom(32), os.urandom(32))


async def test_a_storm_of_publishes_takes_a_transaction_not_one_each(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    channels = []
    for n in range(12):
        async with sessions() as session:
            created = await create_channel(
                session, secrets=SECRETS, name=f"ch{n}", actor=audit.Actor.cli()
            )
        channels.append((created.channel_id, created.key_id))
    gone_id = channels[-1][0]
    async with sessions() as session:
        await delete_channel(session, channel_id=gone_id, actor=audit.Actor.cli())
    recorder = DatabaseRecorder(sessions, refusals=RefusalAggregator(sessions), default_grace=30.0)
    transactions: list[object] = []
    event.listen(engine.sync_engine, "begin", transactions.append)

    started = await asyncio.gather(
        *(
            recorder.started(
                PublishStarted(cid, key, f"c{n}", None, "node-1"),
                remote_address="192.0.2.1",
                fencing_token=n + 1,
                test=False,
                media=True,
            )
            for n, (cid, key) in enumerate(channels)
        )
    )
    assert len(transactions) < len(channels) // 2
    *recorded, (gone, gone_status, _) = started
    assert (gone.session_id, gone.seq, gone_status) == (None, 0, [])  # logged, not raised
    assert len({staged.session_id for staged, _, _ in recorded}) == len(recorded)
    assert all([s.status for s in status] == ["live"] for _, status, _ in recorded)

    transactions.clear()
    ended = await asyncio.gather(
        *(
            recorder.ended(
                _end_of(staged),
                kind=EndKind.CLEAN,
                grace=30.0,
                summary=Summary(),
            )
            for staged, _, _ in recorded
        )
    )
    assert len(transactions) < len(recorded) // 2
    assert [staged.session_id for staged, _ in ended] == [s.session_id for s, _, _ in recorded]
    assert all([s.status for s in status] == ["offline"] for _, status in ended)


async def test_a_publish_made_while_the_database_is_away_is_written_once_it_is_back(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given up at once, an end made during a restart left its session open for good."""
    monkeypatch.setattr(recorder_module, "RETRY_FIRST", 0.01)
    sessions = session_factory(engine)
    async with sessions() as session:
        created = await create_channel(session, secrets=SECRETS, name="ch", actor=audit.Actor.cli())
    refused = {"left": 0}

    def flaky() -> Any:  # what the session factory does while PostgreSQL restarts
        if refused["left"]:
            refused["left"] -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        return sessions()

    recorder = DatabaseRecorder(flaky, refusals=RefusalAggregator(sessions), default_grace=30.0)
    refused["left"] = 3
    started, status, _ = await recorder.started(
        PublishStarted(created.channel_id, created.key_id, "c1", None, "node-1"),
        remote_address="192.0.2.1",
        fencing_token=1,
        test=False,
        media=True,
    )
    assert started.session_id is not None
    assert [s.status for s in status] == ["live"]
    refused["left"] = 3
    ended, status = await recorder.ended(
        _end_of(started), kind=EndKind.CLEAN, grace=30.0, summary=Summary()
    )
    assert ended.session_id == started.session_id
    assert [s.status for s in status] == ["offline"]

    recorder.stop_waiting()  # a stopping node gives up after one more try
    refused["left"] = 1
    again, status, _ = await recorder.started(
        PublishStarted(created.channel_id, created.key_id, "c2", None, "node-1"),
        remote_address="192.0.2.1",
        fencing_token=2,
        test=False,
    )
    assert (again.session_id, status) == (None, [])


def _end_of(started: PublishStarted) -> PublishEnded:
    return PublishEnded(
        started.channel_id, started.key_id, started.connection_id, started.session_id,
        "stopped", 1000, 30, 40, "avc1", "mp4a", "node-1",
    )  # fmt: skip
