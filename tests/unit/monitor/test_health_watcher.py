"""The watcher stages settled health changes in rounds: once each, across restarts."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync import audit
from stream_sync.credentials import ServerSecrets, create_channel
from stream_sync.db.models import Channel, OutboxEvent
from stream_sync.monitor.health_changes import HealthWatcher
from stream_sync.state.codec import decode_event
from stream_sync.state.inprocess import InProcessBus
from stream_sync.state.interfaces import HealthChanged, StreamStats
from tests.support import ManualClock

Sessions = async_sessionmaker[AsyncSession]


def stats(channel_id: int, overall: str, session_id: int = 1) -> StreamStats:
    return StreamStats(channel_id, session_id, "node-1", 0.0, {}, health={"overall": overall})


async def channels(sessions: Sessions, secrets: ServerSecrets, count: int) -> list[int]:
    ids = []
    async with sessions() as session:
        for n in range(count):
            created = await create_channel(
                session, secrets=secrets, name=f"c{n}", actor=audit.Actor.cli()
            )
            ids.append(created.channel_id)
    return ids


async def staged(sessions: Sessions) -> list[HealthChanged]:
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxEvent.payload)
            .where(OutboxEvent.type == "HealthChanged")
            .order_by(OutboxEvent.id)
        )
        return [e for e in map(decode_event, rows) if isinstance(e, HealthChanged)]


def watcher(sessions: Sessions, clock: ManualClock, told: list[int]) -> HealthWatcher:
    return HealthWatcher(
        sessions, InProcessBus(), settle=10.0, clock=clock, staged=lambda: told.append(1)
    )


async def rig(
    sessions: Sessions, secrets: ServerSecrets, count: int
) -> tuple[list[int], ManualClock, list[int], HealthWatcher]:
    """Channels, a clock, the fan-out's wake-ups and a watcher over them."""
    ids = await channels(sessions, secrets, count)
    clock, told = ManualClock(1000.0), []
    return ids, clock, told, watcher(sessions, clock, told)


async def test_a_round_of_many_streams_stages_each_change_once_in_one_transaction(
    sessions: Sessions, server_secrets: ServerSecrets
) -> None:
    ids, clock, told, health = await rig(sessions, server_secrets, 30)
    await health.observe([stats(c, "good") for c in ids])
    clock.now += 10
    await health.observe([stats(c, "good") for c in ids])
    events = await staged(sessions)
    assert sorted(e.channel_id for e in events) == ids
    assert {(e.overall, e.previous, e.session_id) for e in events} == {("good", None, 1)}
    assert told == [1]  # the fan-out is woken once for the round
    # Each took its channel's next sequence number.
    async with sessions() as session:
        seqs = dict((await session.execute(select(Channel.id, Channel.event_seq))).all())
    assert all(seqs[e.channel_id] == e.seq for e in events)


async def test_a_restarted_watcher_does_not_announce_again(
    sessions: Sessions, server_secrets: ServerSecrets
) -> None:
    (first, second), clock, told, before = await rig(sessions, server_secrets, 2)
    for _ in range(2):
        await before.observe([stats(first, "bad"), stats(second, "bad")])
        clock.now += 10
    assert len(await staged(sessions)) == 2

    after = watcher(sessions, clock, told)  # the monitor restarted
    for _ in range(3):
        # first: same session, same value; second: a new session starts afresh
        await after.observe([stats(first, "bad"), stats(second, "bad", session_id=2)])
        clock.now += 10
    events = await staged(sessions)
    assert [(e.channel_id, e.session_id) for e in events[2:]] == [(second, 2)]
    # A change in the restarted watcher's session names what was announced before it.
    await after.observe([stats(first, "good")])
    clock.now += 10
    await after.observe([stats(first, "good")])
    last = (await staged(sessions))[-1]
    assert (last.channel_id, last.overall, last.previous) == (first, "good", "bad")


async def test_a_deleted_channel_does_not_hold_back_the_others(
    sessions: Sessions, server_secrets: ServerSecrets
) -> None:
    (gone, kept), clock, _, health = await rig(sessions, server_secrets, 2)
    await health.observe([stats(gone, "bad"), stats(kept, "bad")])
    async with sessions() as session, session.begin():
        await session.execute(delete(Channel).where(Channel.id == gone))
    clock.now += 10
    await health.observe([stats(gone, "bad"), stats(kept, "bad")])
    assert [e.channel_id for e in await staged(sessions)] == [kept]
