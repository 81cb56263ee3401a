"""The status machine applied to the database, on both engines: sessions, grace, events."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from stream_sync import audit
from stream_sync.credentials import ChannelNotFound, ServerSecrets, create_channel, delete_channel
from stream_sync.db.models import PublishSession
from stream_sync.monitor import history, lifecycle
from stream_sync.monitor.settings import set_monitor_settings
from stream_sync.monitor.status import EndKind
from stream_sync.state import outbox
from stream_sync.state.interfaces import PublishEnded, PublishStarted, StatusChanged

SECRETS = ServerSecrets(os.urandom(32), os.urandom(32))
T0 = 1_700_000_000.0
GRACE = 30.0
Sessions = async_sessionmaker[AsyncSession]


async def channel(sessions: Sessions, name: str = "main") -> tuple[int, str]:
    async with sessions() as session:
        created = await create_channel(session, secrets=SECRETS, name=name, actor=audit.Actor.cli())
    return created.channel_id, created.key_id


async def start(
    sessions: Sessions, channel_id: int, key_id: str, now: float, *, test: bool = False
) -> tuple[PublishStarted, list[StatusChanged]]:
    event = PublishStarted(channel_id, key_id, "c1", None, "node-1")
    staged, outcome, _ = await lifecycle.publish_started(
        sessions,
        event=event,
        remote_address="192.0.2.1",
        fencing_token=1,
        test=test,
        default_grace=GRACE,
        now=now,
    )
    return staged, outcome.status_events


async def end(
    sessions: Sessions, started: PublishStarted, kind: EndKind, now: float, *, frames: int = 90
) -> list[StatusChanged]:
    event = PublishEnded(
        started.channel_id, started.key_id, "c1", started.session_id, "why", 1_000_000, frames,
        140, "avc1", "mp4a", "node-1",
    )  # fmt: skip
    summary = lifecycle.Summary(encoder="obs", width=1280, height=720, fps=30.0, peak_kbps=2600.0)
    _, outcome = await lifecycle.publish_ended(
        sessions, event=event, kind=kind, grace=GRACE, summary=summary, now=now
    )
    return outcome.status_events


async def flowing(sessions: Sessions, channel_id: int, now: float) -> list[StatusChanged]:
    outcome = await lifecycle.media_flowing(sessions, channel_id=channel_id, now=now, node="n")
    return outcome.status_events


async def sessions_of(sessions: Sessions, channel_id: int) -> list[history.SessionView]:
    async with sessions() as session:
        return await history.list_sessions(session, channel_id=channel_id)


def statuses(events: list[StatusChanged]) -> list[str]:
    return [event.status for event in events]


async def test_live_only_when_media_flows_and_offline_at_once_on_a_clean_stop(
    sessions: Sessions,
) -> None:
    channel_id, key_id = await channel(sessions)
    started, changes = await start(sessions, channel_id, key_id, T0)
    assert changes == []  # publish alone is not "live"
    assert started.session_id is not None
    assert started.seq == 1
    assert statuses(await flowing(sessions, channel_id, T0 + 1)) == ["live"]
    assert await flowing(sessions, channel_id, T0 + 2) == []  # no change, no event
    stopped = await end(sessions, started, EndKind.CLEAN, T0 + 60)
    assert statuses(stopped) == ["offline"]
    assert stopped[0].session_id == started.session_id
    (row,) = await sessions_of(sessions, channel_id)
    assert row.end_reason == "stopped"
    assert row.ended_at is not None
    assert (row.width, row.height, row.encoder, row.peak_kbps) == (1280, 720, "obs", 2600.0)
    assert row.video_frames == 90
    async with sessions() as session:
        seqs = [event.seq for _, event in await outbox.read_since(session, after_id=0)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


async def test_a_reconnect_within_grace_is_the_same_session(sessions: Sessions) -> None:
    channel_id, key_id = await channel(sessions)
    first, _ = await start(sessions, channel_id, key_id, T0)
    await flowing(sessions, channel_id, T0 + 1)
    dropped = await end(sessions, first, EndKind.ABRUPT, T0 + 10)
    assert statuses(dropped) == ["reconnecting"]
    assert dropped[0].grace_until == T0 + 10 + GRACE
    second, _ = await start(sessions, channel_id, key_id, T0 + 10 + GRACE - 0.5)
    assert second.session_id == first.session_id
    assert statuses(await flowing(sessions, channel_id, T0 + 41)) == ["live"]
    await end(sessions, second, EndKind.CLEAN, T0 + 50, frames=60)
    (row,) = await sessions_of(sessions, channel_id)
    assert row.publishes == 2
    assert row.video_frames == 150  # both publishes add up in one session


async def test_grace_expiry_closes_the_session(sessions: Sessions) -> None:
    channel_id, key_id = await channel(sessions)
    first, _ = await start(sessions, channel_id, key_id, T0)
    await flowing(sessions, channel_id, T0 + 1)
    await end(sessions, first, EndKind.ABRUPT, T0 + 10)
    assert await lifecycle.expire_grace(sessions, now=T0 + 10 + GRACE - 0.1) == []
    expired = await lifecycle.expire_grace(sessions, now=T0 + 10 + GRACE)
    assert statuses(expired) == ["offline"]
    assert expired[0].reason == "grace expired"
    (row,) = await sessions_of(sessions, channel_id)
    assert row.end_reason == "grace expired"
    later, _ = await start(sessions, channel_id, key_id, T0 + 100)
    assert later.session_id != first.session_id


async def test_a_stall_and_a_lost_node_wait_for_grace(sessions: Sessions) -> None:
    a, key_a = await channel(sessions, "a")
    b, key_b = await channel(sessions, "b")
    for channel_id, key_id in ((a, key_a), (b, key_b)):
        await start(sessions, channel_id, key_id, T0)
        await flowing(sessions, channel_id, T0 + 1)
    stalled = await lifecycle.media_stalled(
        sessions, channel_id=a, now=T0 + 5, grace=GRACE, node="node-1"
    )
    assert statuses(stalled.status_events) == ["reconnecting"]
    assert statuses(await flowing(sessions, a, T0 + 6)) == ["live"]  # it came back
    lost = await lifecycle.node_lost(sessions, node="node-1", now=T0 + 20, default_grace=GRACE)
    assert sorted(statuses(lost)) == ["reconnecting", "reconnecting"]
    closed = await lifecycle.expire_grace(sessions, now=T0 + 20 + GRACE)
    assert {event.reason for event in closed} == {"node lost"}
    for channel_id in (a, b):
        (row,) = await sessions_of(sessions, channel_id)
        assert row.end_reason == "node lost"


async def test_media_reports_of_a_publisher_taken_over_change_nothing(sessions: Sessions) -> None:
    """Fencing: a node frozen past its lease wakes and reports a stall (the fault tests)."""
    channel_id, key_id = await channel(sessions)
    for node, token, now in (("node-a", 1, T0), ("node-b", 2, T0 + 5)):  # b takes over
        await lifecycle.publish_started(
            sessions,
            event=PublishStarted(channel_id, key_id, f"c{token}", None, node),
            remote_address="192.0.2.1",
            fencing_token=token,
            test=False,
            default_grace=GRACE,
            now=now,
            media=True,
        )
    stale = await lifecycle.media_stalled(
        sessions, channel_id=channel_id, now=T0 + 12, grace=GRACE, node="node-a", token=1
    )
    assert stale.status_events == []
    (row,) = await sessions_of(sessions, channel_id)
    assert row.status == "live"
    current = await lifecycle.media_stalled(
        sessions, channel_id=channel_id, now=T0 + 13, grace=GRACE, node="node-b", token=2
    )
    assert statuses(current.status_events) == ["reconnecting"]


async def test_test_mode_is_never_live(sessions: Sessions) -> None:
    by_key, key_1 = await channel(sessions, "by-key")
    by_switch, key_2 = await channel(sessions, "by-switch")
    async with sessions() as session:
        await set_monitor_settings(
            session, channel_id=by_switch, actor=audit.Actor.cli(), test_mode=True
        )
    await start(sessions, by_key, key_1, T0, test=True)
    await start(sessions, by_switch, key_2, T0)
    assert statuses(await flowing(sessions, by_key, T0 + 1)) == ["testing"]
    assert statuses(await flowing(sessions, by_switch, T0 + 1)) == ["testing"]


async def test_a_revoked_key_ends_the_session_at_once(sessions: Sessions) -> None:
    channel_id, key_id = await channel(sessions)
    started, _ = await start(sessions, channel_id, key_id, T0)
    await flowing(sessions, channel_id, T0 + 1)
    changes = await end(sessions, started, EndKind.REVOKED, T0 + 2)
    assert statuses(changes) == ["offline"]
    assert changes[0].reason == "key revoked"


async def test_a_per_channel_grace_period(sessions: Sessions) -> None:
    channel_id, key_id = await channel(sessions)
    async with sessions() as session:
        await set_monitor_settings(
            session, channel_id=channel_id, actor=audit.Actor.cli(), grace_seconds=5
        )
    _, _, grace = await lifecycle.publish_started(
        sessions,
        event=PublishStarted(channel_id, key_id, "c1", None, "node-1"),
        remote_address="",
        fencing_token=1,
        test=False,
        default_grace=GRACE,
        now=T0,
    )
    assert grace == 5.0


async def test_a_deleted_channel_is_refused_cleanly(sessions: Sessions) -> None:
    channel_id, key_id = await channel(sessions)
    async with sessions() as session:
        await delete_channel(session, channel_id=channel_id, actor=audit.Actor.cli())
    with pytest.raises(ChannelNotFound):
        await start(sessions, channel_id, key_id, T0)


async def test_transitions_racing_a_channel_deletion_never_deadlock(sessions: Sessions) -> None:
    """Everything locks the channel row first, as the deletion does (PostgreSQL)."""

    async def attempt(step: Callable[[], Awaitable[object]]) -> None:
        with contextlib.suppress(ChannelNotFound):
            await step()

    for round_ in range(10):
        channel_id, key_id = await channel(sessions, f"c{round_}")
        started, _ = await start(sessions, channel_id, key_id, T0)

        async def delete(channel_id: int = channel_id) -> None:
            async with sessions() as session:
                await delete_channel(session, channel_id=channel_id, actor=audit.Actor.cli())

        await asyncio.wait_for(
            asyncio.gather(
                delete(),
                attempt(lambda s=started: end(sessions, s, EndKind.ABRUPT, T0 + 1)),
                attempt(lambda c=channel_id: flowing(sessions, c, T0 + 1)),
                attempt(
                    lambda: lifecycle.node_lost(
                        sessions, node="node-1", now=T0 + 2, default_grace=GRACE
                    )
                ),
                attempt(lambda: lifecycle.expire_grace(sessions, now=T0 + 100)),
            ),
            timeout=20,
        )
        assert await sessions_of(sessions, channel_id) == []


async def test_a_live_sessions_average_counts_the_running_publish(sessions: Sessions) -> None:
    channel_id, key_id = await channel(sessions)
    started, _ = await start(sessions, channel_id, key_id, T0)
    assert started.session_id is not None
    await flowing(sessions, channel_id, T0 + 1)
    running = lifecycle.Summary(peak_kbps=1200.0, running_bytes=1_250_000)
    await lifecycle.update_summaries(sessions, {started.session_id: running}, now=T0 + 10)
    (live,) = await sessions_of(sessions, channel_id)
    assert live.avg_kbps == 1000.0  # 1.25 MB in 10 s, though no publish has ended yet
    await end(sessions, started, EndKind.CLEAN, T0 + 20)  # the publish's 1 MB lands in the row
    (ended,) = await sessions_of(sessions, channel_id)
    assert ended.avg_kbps == 400.0
    assert ended.peak_kbps == 2600.0


async def test_one_batch_updates_every_live_session_and_leaves_ended_ones(
    sessions: Sessions,
) -> None:
    live: list[int] = []
    for name in ("one", "two"):
        channel_id, key_id = await channel(sessions, name)
        started, _ = await start(sessions, channel_id, key_id, T0)
        assert started.session_id is not None
        live.append(started.session_id)
    channel_id, key_id = await channel(sessions, "gone")
    gone, _ = await start(sessions, channel_id, key_id, T0)
    assert gone.session_id is not None
    await end(sessions, gone, EndKind.CLEAN, T0 + 5)
    (before,) = await sessions_of(sessions, channel_id)

    summaries = {
        session_id: lifecycle.Summary(encoder=f"enc{i}", width=640 * (i + 1), running_bytes=10**6)
        for i, session_id in enumerate([*live, gone.session_id])
    }
    await lifecycle.update_summaries(sessions, summaries, now=T0 + 10)

    async with sessions() as session:
        rows = {row.id: row for row in await session.scalars(select(PublishSession))}
    assert [(rows[i].encoder, rows[i].width, rows[i].avg_kbps) for i in live] == [
        ("enc0", 640, 800.0),
        ("enc1", 1280, 800.0),
    ]
    (after,) = await sessions_of(sessions, channel_id)
    assert after == before  # an ended session's row is final


async def test_a_publish_after_grace_ran_out_closes_and_opens_in_one_transaction(
    sessions: Sessions,
) -> None:
    """Expiry, the new session and its first media: each event names its own session."""
    channel_id, key_id = await channel(sessions)
    first, _ = await start(sessions, channel_id, key_id, T0)
    await flowing(sessions, channel_id, T0 + 1)
    await end(sessions, first, EndKind.ABRUPT, T0 + 10)  # grace runs until T0 + 40
    staged, outcome, _ = await lifecycle.publish_started(
        sessions,
        event=PublishStarted(channel_id, key_id, "c2", None, "node-2"),
        remote_address="192.0.2.9",
        fencing_token=7,
        test=False,
        default_grace=GRACE,
        now=T0 + 50,  # no tick ran: this transition expires the old session itself
        media=True,
    )
    assert staged.session_id is not None
    assert staged.session_id != first.session_id
    assert outcome.session_id == staged.session_id
    expired, live = outcome.status_events
    assert (expired.status, expired.reason, expired.session_id) == (
        "offline",
        "grace expired",
        first.session_id,
    )
    assert (live.status, live.session_id) == ("live", staged.session_id)
    assert expired.seq < staged.seq < live.seq
    async with sessions() as session:
        stored = [event for _, event in await outbox.read_since(session, after_id=0)]
    assert [event.seq for event in stored] == list(range(1, len(stored) + 1))
    assert stored[-3:] == [expired, staged, live]
    old, new = sorted(await sessions_of(sessions, channel_id), key=lambda row: row.id)
    assert (old.end_reason, old.ended_at is not None) == ("grace expired", True)
    assert new.ended_at is None
    async with sessions() as session:
        row = await session.get(PublishSession, staged.session_id)
    assert row is not None
    assert (row.status, row.media, row.publishing, row.node, row.fencing_token) == (
        "live",
        True,
        True,
        "node-2",
        7,
    )


def _starting(channel_id: int, key_id: str, connection: str) -> lifecycle.Start:
    event = PublishStarted(channel_id, key_id, connection, None, "node-1")
    return lifecycle.Start(event, "192.0.2.1", fencing_token=1, test=False, media=True)


def _ending(started: PublishStarted, kind: EndKind) -> lifecycle.End:
    event = PublishEnded(
        started.channel_id, started.key_id, started.connection_id, started.session_id, "why",
        1_000, 30, 40, "avc1", "mp4a", "node-1",
    )  # fmt: skip
    return lifecycle.End(event, kind, GRACE, lifecycle.Summary(encoder="obs"))


async def test_a_storm_of_starts_and_ends_costs_the_statements_of_one(
    sessions: Sessions, engine: AsyncEngine
) -> None:
    """Many channels' publishes in one call: each answered on its own, in one transaction.

    SQLite inserts the new session rows one by one (it cannot say in which order a
    multi-row INSERT returns their ids); in process, that costs no round trips.
    """
    statements: list[str] = []

    def counted() -> int:
        if engine.dialect.name == "postgresql":
            return len(statements)
        return len([s for s in statements if not s.startswith("INSERT INTO publish_sessions")])

    sa_event.listen(
        engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )
    lone_id, lone_key = await channel(sessions, "lone")
    statements.clear()
    (lone,) = await lifecycle.publish_started_many(
        sessions, [_starting(lone_id, lone_key, "c0")], default_grace=GRACE, now=T0
    )
    one = counted()
    assert not isinstance(lone, ChannelNotFound)
    statements.clear()
    await lifecycle.publish_ended_many(sessions, [_ending(lone[0], EndKind.CLEAN)], now=T0)
    one_end = counted()
    channels = [await channel(sessions, f"ch{n}") for n in range(6)]
    gone_id, gone_key = channels.pop()
    async with sessions() as session:
        await delete_channel(session, channel_id=gone_id, actor=audit.Actor.cli())
    statements.clear()
    records = await lifecycle.publish_started_many(
        sessions,
        [_starting(cid, key, f"c{n}") for n, (cid, key) in enumerate(channels)]
        + [_starting(gone_id, gone_key, "gone")],
        default_grace=GRACE,
        now=T0,
    )
    assert counted() == one
    assert isinstance(records[-1], ChannelNotFound)
    started = [record for record in records if not isinstance(record, ChannelNotFound)]
    assert [staged.channel_id for staged, _, _ in started] == [cid for cid, _ in channels]
    assert len({staged.session_id for staged, _, _ in started}) == len(channels)
    for staged, outcome, grace in started:
        assert grace == GRACE
        (live,) = outcome.status_events
        assert (live.channel_id, live.status, live.session_id) == (
            staged.channel_id,
            "live",
            staged.session_id,
        )
        assert staged.seq is not None
        assert live.seq == staged.seq + 1
    statements.clear()
    ended = await lifecycle.publish_ended_many(
        sessions, [_ending(staged, EndKind.CLEAN) for staged, _, _ in started], now=T0 + 5
    )
    assert counted() == one_end
    for (staged, _, _), record in zip(started, ended, strict=True):
        assert not isinstance(record, ChannelNotFound)
        end_event, outcome = record
        assert [(e.status, e.seq) for e in outcome.status_events] == [("offline", staged.seq + 2)]
        assert (end_event.session_id, end_event.seq) == (staged.session_id, staged.seq + 3)
        (row,) = await sessions_of(sessions, staged.channel_id)
        assert (row.end_reason, row.video_frames, row.encoder) == ("stopped", 30, "obs")


async def test_two_publishes_of_one_channel_in_a_storm_follow_each_other(
    sessions: Sessions,
) -> None:
    """A reconnect and its end in one call: each sees the one before it, in order."""
    channel_id, key_id = await channel(sessions)
    first, second = await lifecycle.publish_started_many(
        sessions,
        [_starting(channel_id, key_id, "c1"), _starting(channel_id, key_id, "c2")],
        default_grace=GRACE,
        now=T0,
    )
    assert not isinstance(first, ChannelNotFound)
    assert not isinstance(second, ChannelNotFound)
    assert second[0].session_id == first[0].session_id
    assert second[0].seq > first[0].seq > 0
    async with sessions() as session:
        row = await session.get(PublishSession, first[0].session_id)
    assert row is not None
    assert (row.publishes, row.remote_address) == (2, "192.0.2.1")


async def test_a_lost_nodes_channels_wait_in_one_transaction_not_one_each(
    sessions: Sessions, engine: AsyncEngine
) -> None:
    channels = [await channel(sessions, f"ch{n}") for n in range(5)]
    for cid, key in channels:
        await start(sessions, cid, key, T0)
        await flowing(sessions, cid, T0 + 1)
    gone_id = channels[-1][0]
    async with sessions() as session:  # deleted after the node's sessions were listed, say
        await delete_channel(session, channel_id=gone_id, actor=audit.Actor.cli())
    transactions: list[object] = []
    sa_event.listen(engine.sync_engine, "begin", transactions.append)

    lost = await lifecycle.node_lost(sessions, node="node-1", now=T0 + 5, default_grace=GRACE)
    assert len(transactions) == 2  # the listing, then every channel's transition
    assert sorted(e.channel_id for e in lost) == sorted(cid for cid, _ in channels[:-1])
    assert {(e.status, e.grace_until) for e in lost} == {("reconnecting", T0 + 5 + GRACE)}

    transactions.clear()
    expired = await lifecycle.expire_grace(sessions, now=T0 + 5 + GRACE)
    assert len(transactions) == 2
    assert {(e.status, e.reason) for e in expired} == {("offline", "node lost")}
    assert len(expired) == len(channels) - 1


async def test_a_start_that_waited_for_the_channel_lock_sees_what_the_holder_wrote(
    sessions: Sessions, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two starts of one channel race (an encoder that reconnects at once): one session."""
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks and READ COMMITTED rechecks are PostgreSQL's")
    channel_id, key_id = await channel(sessions)
    first, _ = await start(sessions, channel_id, key_id, T0)
    await end(sessions, first, EndKind.CLEAN, T0 + 1)
    holding, release = asyncio.Event(), asyncio.Event()
    write = lifecycle._write

    async def write_then_hold(connection: object, units: object) -> None:
        await write(connection, units)  # type: ignore[arg-type]
        if not holding.is_set():  # the first start: its session is written, not committed
            holding.set()
            await release.wait()

    monkeypatch.setattr(lifecycle, "_write", write_then_hold)
    holder = asyncio.create_task(start(sessions, channel_id, key_id, T0 + 2))
    await holding.wait()
    waiter = asyncio.create_task(start(sessions, channel_id, key_id, T0 + 3))
    async with engine.connect() as probe:  # until the second start waits for the lock
        waits = text("SELECT count(*) FROM pg_locks WHERE NOT granted")
        while not (await probe.execute(waits)).scalar():  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0.01)
    release.set()
    held, _ = await holder
    waited, _ = await waiter
    assert waited.session_id == held.session_id  # the second continues the first's session
    async with sessions() as session:
        open_rows = await session.scalars(
            select(PublishSession.id).where(
                PublishSession.channel_id == channel_id, PublishSession.ended_at.is_(None)
            )
        )
        assert list(open_rows) == [held.session_id]
