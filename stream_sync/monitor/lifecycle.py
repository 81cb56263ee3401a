"""The status machine applied to the database: one transaction per transition.

Each function locks the channel row, rebuilds the channel's `ChannelState` from its
open session row, runs one pure transition (monitor/status.py), and writes what it
says: sessions opened, continued or closed, the new state, and `StatusChanged`
events staged in the outbox with the channel's next sequence number. Whichever
process calls it (the ingest node for publishes and media, the monitor for grace
expiry and lost nodes) applies the same rules to the same truth.

Callers publish the returned events on the bus after the commit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..credentials.errors import ChannelNotFound
from ..db.models import Channel, PublishSession
from ..state import outbox
from ..state.interfaces import PublishEnded, PublishStarted, StatusChanged
from . import status as machine
from .status import ChannelState, EndKind, EndReason, Status, Transition

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True, slots=True)
class Summary:
    """What one publish looked like, folded into its session's history row."""

    encoder: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    peak_kbps: float | None = None
    health_issues: tuple[str, ...] = ()
    # Media bytes of a publish still running, not yet added to the row (which counts
    # ended publishes): the live session's average bitrate includes them.
    running_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    status_events: list[StatusChanged]
    session_id: int | None


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def _channel(session: AsyncSession, channel_id: int) -> Channel:
    """The channel row, locked first: the order key changes and deletion use too.

    PostgreSQL: FOR NO KEY UPDATE (it does not block foreign-key checks). SQLite has
    no row locks and starts a transaction's write lock only at its first write, so a
    no-op UPDATE comes first: from then on nobody else writes until we commit.
    """
    query = select(Channel).where(Channel.id == channel_id)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(key_share=True)
    else:
        await session.execute(
            update(Channel).where(Channel.id == channel_id).values(event_seq=Channel.event_seq)
        )
    channel = (await session.scalars(query)).one_or_none()
    if channel is None:
        raise ChannelNotFound("the channel was deleted")
    return channel


def _cut(value: str | None, limit: int) -> str | None:
    """Longer values are cut, not refused: a strange address never loses a session."""
    return None if value is None else value[:limit]


async def _open_row(session: AsyncSession, channel_id: int) -> PublishSession | None:
    query = select(PublishSession).where(
        PublishSession.channel_id == channel_id, PublishSession.ended_at.is_(None)
    )
    return (await session.scalars(query.execution_options(populate_existing=True))).one_or_none()


def _state(row: PublishSession | None) -> ChannelState:
    if row is None:
        return ChannelState()
    return ChannelState(
        status=Status(row.status),
        session_id=row.id,
        test=row.test,
        publishing=row.publishing,
        media=row.media,
        grace_until=row.grace_until,
        pending_reason=EndReason(row.pending_reason) if row.pending_reason else None,
        since=row.status_since,
    )


async def _apply(
    session: AsyncSession,
    channel: Channel,
    transition: Transition,
    *,
    now: float,
    node: str,
    on_open: Callable[[bool], PublishSession] | None = None,
    on_continue: Callable[[PublishSession], None] | None = None,
) -> tuple[ChannelState, list[StatusChanged]]:
    state = transition.state
    events: list[StatusChanged] = []
    closed: int | None = None
    for effect in transition.effects:
        if isinstance(effect, machine.CloseSession):
            closed = effect.session_id
            await session.execute(
                update(PublishSession)
                .where(PublishSession.id == effect.session_id, PublishSession.ended_at.is_(None))
                .values(
                    ended_at=_moment(now),
                    end_reason=str(effect.reason),
                    status=str(Status.OFFLINE),
                    publishing=False,
                    media=False,
                    grace_until=None,
                    pending_reason=None,
                    status_since=now,
                )
                .execution_options(synchronize_session=False)
            )
        elif isinstance(effect, machine.OpenSession):
            if on_open is None:
                raise RuntimeError("a transition opened a session where none can start")
            row = on_open(effect.test)
            session.add(row)
            await session.flush()
            state = machine.session_opened(state, row.id)
        elif isinstance(effect, machine.ContinueSession):
            continued = await session.get(PublishSession, effect.session_id)
            if continued is not None and on_continue is not None:
                on_continue(continued)
        elif isinstance(effect, machine.StatusChange):
            about = state.session_id if state.session_id is not None else closed
            event = machine.status_event(channel.id, effect, session_id=about, at=now, node=node)
            events.append(await outbox.stage(session, event))
    if state.session_id is not None:
        await session.execute(
            update(PublishSession)
            .where(PublishSession.id == state.session_id, PublishSession.ended_at.is_(None))
            .values(
                status=str(state.status),
                test=state.test,
                publishing=state.publishing,
                media=state.media,
                grace_until=state.grace_until,
                pending_reason=str(state.pending_reason) if state.pending_reason else None,
                status_since=state.since,
            )
            .execution_options(synchronize_session=False)
        )
    return state, events


async def publish_started(
    sessions: Sessions,
    *,
    event: PublishStarted,
    remote_address: str,
    fencing_token: int,
    test: bool,
    default_grace: float,
    now: float,
    media: bool = False,
) -> tuple[PublishStarted, Outcome, float]:
    """A publish was accepted: a new session, or the same one after a reconnect.

    With ``media``, its media flows already: one transaction for what would be two.
    Returns the PublishStarted event as staged (session id, sequence number), the
    status outcome, and the channel's grace period for this session.
    """
    async with sessions() as session, session.begin():
        channel = await _channel(session, event.channel_id)
        grace = float(channel.grace_seconds) if channel.grace_seconds is not None else default_grace
        test = test or channel.test_mode
        row = await _open_row(session, channel.id)
        transition = machine.publish_accepted(_state(row), now=now, test=test, grace=grace)

        def opened(test_session: bool) -> PublishSession:
            return PublishSession(
                channel_id=channel.id,
                key_id=event.key_id,
                node=event.node[:64],
                remote_address=_cut(remote_address, 64),
                started_at=_moment(now),
                fencing_token=fencing_token,
                test=test_session,
                publishes=1,
                media_bytes=0,
                video_frames=0,
                audio_frames=0,
            )

        def continued(existing: PublishSession) -> None:
            existing.key_id = event.key_id
            existing.node = event.node[:64]
            existing.remote_address = _cut(remote_address, 64)
            existing.fencing_token = fencing_token
            existing.publishes += 1

        state, events = await _apply(
            session,
            channel,
            transition,
            now=now,
            node=event.node,
            on_open=opened,
            on_continue=continued,
        )
        staged = await outbox.stage(
            session, dataclasses.replace(event, session_id=state.session_id)
        )
        if media:
            state, flowing = await _apply(
                session, channel, machine.media_flowing(state, now=now), now=now, node=event.node
            )
            events += flowing
    return staged, Outcome(events, state.session_id), grace


async def media_flowing(sessions: Sessions, *, channel_id: int, now: float, node: str) -> Outcome:
    return await _simple(sessions, channel_id, node, machine.media_flowing, now=now)


async def media_stalled(
    sessions: Sessions, *, channel_id: int, now: float, grace: float, node: str
) -> Outcome:
    return await _simple(sessions, channel_id, node, machine.media_stalled, now=now, grace=grace)


async def _simple(
    sessions: Sessions,
    channel_id: int,
    node: str,
    step: Callable[..., Transition],
    *,
    now: float,
    **arguments: Any,
) -> Outcome:
    """One transition that needs nothing but the channel's open session."""
    async with sessions() as session, session.begin():
        channel = await _channel(session, channel_id)
        row = await _open_row(session, channel_id)
        if row is None:
            return Outcome([], None)
        transition = step(_state(row), now=now, **arguments)
        state, events = await _apply(session, channel, transition, now=now, node=node)
    return Outcome(events, state.session_id)


async def publish_ended(
    sessions: Sessions,
    *,
    event: PublishEnded,
    kind: EndKind,
    grace: float,
    summary: Summary,
    now: float,
) -> tuple[PublishEnded, Outcome]:
    """Fold the publish into its session, then let the machine decide what happens next."""
    async with sessions() as session, session.begin():
        channel = await _channel(session, event.channel_id)
        row = await _open_row(session, channel.id)
        if row is None or (event.session_id is not None and row.id != event.session_id):
            # Its session was closed meanwhile (a lost node, grace elsewhere): only record it.
            staged = await outbox.stage(session, event)
            return staged, Outcome([], None)
        row.media_bytes += event.media_bytes
        row.video_frames += event.video_frames
        row.audio_frames += event.audio_frames
        row.video_codec = _cut(event.video_codec, 16) or row.video_codec
        row.audio_codec = _cut(event.audio_codec, 16) or row.audio_codec
        _fold(row, summary, now)
        state, events = await _apply(
            session,
            channel,
            machine.publish_ended(_state(row), now=now, kind=kind, grace=grace),
            now=now,
            node=event.node,
        )
        staged = await outbox.stage(session, event)
    return staged, Outcome(events, state.session_id)


def _fold(row: PublishSession, summary: Summary, now: float) -> None:
    row.encoder = _cut(summary.encoder, 128) or row.encoder
    row.width = summary.width or row.width
    row.height = summary.height or row.height
    row.fps = summary.fps or row.fps
    if summary.peak_kbps is not None:
        row.peak_kbps = max(row.peak_kbps or 0.0, summary.peak_kbps)
    seen = set(row.health_issues or ()) | set(summary.health_issues)
    row.health_issues = sorted(seen)
    duration = now - _epoch(row.started_at)
    if duration > 0:
        media_bytes = row.media_bytes + summary.running_bytes
        row.avg_kbps = round(media_bytes * 8 / 1000 / duration, 1)
    row.last_update_at = _moment(now)


async def update_summaries(
    sessions: Sessions, summaries: Mapping[int, Summary], *, now: float
) -> None:
    """Keep live sessions' history current, so a lost node's last minutes are not lost.

    One transaction for all of a node's sessions: at hundreds of publishers, one
    transaction each would cost more than ingesting their media.
    """
    if not summaries:
        return
    async with sessions() as session, session.begin():
        rows = await session.scalars(
            select(PublishSession)
            .where(PublishSession.id.in_(list(summaries)), PublishSession.ended_at.is_(None))
            .execution_options(populate_existing=True)
        )
        for row in rows:
            _fold(row, summaries[row.id], now)


async def expire_grace(
    sessions: Sessions, *, now: float, node: str = "monitor"
) -> list[StatusChanged]:
    """Close sessions whose grace ran out (the monitor calls this about once a second)."""
    async with sessions() as session, session.begin():
        due = (
            await session.scalars(
                select(PublishSession.channel_id).where(
                    PublishSession.ended_at.is_(None),
                    PublishSession.status == str(Status.RECONNECTING),
                    PublishSession.grace_until <= now,
                )
            )
        ).all()
    events: list[StatusChanged] = []
    for channel_id in due:
        outcome = await _simple(sessions, channel_id, node, machine.tick, now=now)
        events += outcome.status_events
    return events


async def node_lost(
    sessions: Sessions, *, node: str, now: float, default_grace: float
) -> list[StatusChanged]:
    """A node stopped heartbeating: its channels wait in Reconnecting for their owners."""
    async with sessions() as session, session.begin():
        rows = (
            await session.execute(
                select(PublishSession.channel_id, Channel.grace_seconds)
                .join(Channel, Channel.id == PublishSession.channel_id)
                .where(PublishSession.ended_at.is_(None), PublishSession.node == node)
            )
        ).all()
    events: list[StatusChanged] = []
    for channel_id, grace_seconds in rows:
        grace = float(grace_seconds) if grace_seconds is not None else default_grace
        outcome = await _simple(
            sessions, channel_id, "monitor", machine.node_lost, now=now, grace=grace
        )
        events += outcome.status_events
    return events
