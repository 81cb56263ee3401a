"""The status machine applied to the database: each transition in a transaction.

Each function locks the channel row, rebuilds the channel's `ChannelState` from its
open session row, runs one pure transition (monitor/status.py), and writes what it
says: sessions opened, continued or closed, the new state, and `StatusChanged`
events staged in the outbox with the channel's next sequence numbers. Whichever
process calls it (the ingest node for publishes and media, the monitor for grace
expiry and lost nodes) applies the same rules to the same truth.

Every publish costs a start and an end here, so a transition is built to be cheap:
SQLAlchemy Core without the ORM, one read of the channel and its open session
together, the effects folded in memory (`_Unit`), then one write per set of columns
and two for all the events. Starts and ends come in storms (a node restarts, a
network hiccups, a show ends), so many channels' transitions share a transaction
and its statements (`publish_started_many`, `publish_ended_many`). In a storm of
hundreds of publishers this path, not the media, decided what a publish cost.

Callers publish the returned events on the bus after the commit.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from ..credentials.errors import ChannelNotFound
from ..db.members import member_of, one_of
from ..db.models import Channel, PublishSession
from ..state import outbox
from ..state.interfaces import PublishEnded, PublishStarted, StatusChanged
from . import status as machine
from .status import ChannelState, EndKind, EndReason, Status, Transition

Sessions = async_sessionmaker[AsyncSession]
# The id of a session row not inserted yet: the unit inserts it at the end, with its
# final values, and puts the real id into the events that name it.
_NEW = -1
_table = cast(Table, PublishSession.__table__)
# What a transition needs of the open session: its state, and what folding a
# publish's summary into it reads.
_ROW = tuple(
    _table.c[name]
    for name in (
        "id",
        "status",
        "test",
        "publishing",
        "media",
        "grace_until",
        "pending_reason",
        "status_since",
        "started_at",
        "publishes",
        "fencing_token",
        "media_bytes",
        "video_frames",
        "audio_frames",
        "video_codec",
        "audio_codec",
        "encoder",
        "width",
        "height",
        "fps",
        "peak_kbps",
        "avg_kbps",
        "health_issues",
    )
)


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


def _cut(value: str | None, limit: int) -> str | None:
    """Longer values are cut, not refused: a strange address never loses a session."""
    return None if value is None else value[:limit]


@dataclass(slots=True)
class _Unit:
    """One channel's part of a transaction: read under the channel's lock, written at the end.

    Transitions change `state` and collect row values and events in memory; `_write`
    then sends the rows and events of every unit of the transaction together.
    """

    channel_id: int
    event_seq: int  # the channel's last sequence number, as read under its lock
    grace_seconds: int | None
    test_mode: bool
    row: Mapping[Any, Any] | None  # the open session, as read
    state: ChannelState
    node: str
    now: float
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # session id -> values
    events: list[Any] = field(default_factory=list)

    def apply(
        self,
        transition: Transition,
        *,
        opened: Callable[[bool], dict[str, Any]] | None = None,
        continued: dict[str, Any] | None = None,
    ) -> list[StatusChanged]:
        """Fold one transition in; returns its status events (their seq comes at write)."""
        state = transition.state
        changes: list[StatusChanged] = []
        closed: int | None = None
        for effect in transition.effects:
            if isinstance(effect, machine.CloseSession):
                closed = effect.session_id
                self._set(
                    closed,
                    ended_at=_moment(self.now),
                    end_reason=str(effect.reason),
                    status=str(Status.OFFLINE),
                    publishing=False,
                    media=False,
                    grace_until=None,
                    pending_reason=None,
                    status_since=self.now,
                )
            elif isinstance(effect, machine.OpenSession):
                if opened is None:
                    raise RuntimeError("a transition opened a session where none can start")
                self.rows[_NEW] = opened(effect.test)
                state = machine.session_opened(state, _NEW)
            elif isinstance(effect, machine.ContinueSession):
                if continued is not None:
                    self._set(effect.session_id, **continued)
            elif isinstance(effect, machine.StatusChange):
                about = state.session_id if state.session_id is not None else closed
                changes.append(
                    machine.status_event(
                        self.channel_id, effect, session_id=about, at=self.now, node=self.node
                    )
                )
        if state.session_id is not None:
            self._set(
                state.session_id,
                status=str(state.status),
                test=state.test,
                publishing=state.publishing,
                media=state.media,
                grace_until=state.grace_until,
                pending_reason=str(state.pending_reason) if state.pending_reason else None,
                status_since=state.since,
            )
        self.state = state
        self.events += changes
        return changes

    def _set(self, session_id: int, **values: Any) -> None:
        self.rows.setdefault(session_id, {}).update(values)


async def _write(connection: AsyncConnection, units: Sequence[_Unit]) -> None:
    """Send what the units' transitions decided; staged events replace their `events`.

    One statement per set of columns, whatever the number of units: the updates
    first (a session closed before its channel's new one is inserted), then the new
    rows, then every unit's events (`outbox.stage_locked`).
    """
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    inserts: dict[tuple[str, ...], list[_Unit]] = {}
    for unit in units:
        for session_id, values in unit.rows.items():
            columns = tuple(values)
            if session_id == _NEW:
                inserts.setdefault(columns, []).append(unit)
            else:
                updates.setdefault(columns, []).append({**values, "row_id": session_id})
    for columns, parameters in updates.items():
        await connection.execute(_update(columns), parameters)
    for columns, opening in inserts.items():
        result = await connection.execute(_insert(columns), [unit.rows[_NEW] for unit in opening])
        for unit, inserted in zip(opening, result.scalars().all(), strict=True):
            if unit.state.session_id == _NEW:
                unit.state = machine.session_opened(unit.state, inserted)
            unit.events = [_with_session(event, inserted) for event in unit.events]
    staged = await outbox.stage_locked(
        connection, [(unit.channel_id, unit.event_seq, unit.events) for unit in units]
    )
    for unit, events in zip(units, staged, strict=True):
        unit.events = events


# Statements are built once per column set and reused: building one per call (its
# bind parameters, its cache key) cost more than sending it.
@functools.cache
def _insert(columns: tuple[str, ...]) -> Insert:
    return (
        insert(_table)
        .values({name: bindparam(name, type_=_table.c[name].type) for name in columns})
        .returning(_table.c.id, sort_by_parameter_order=True)
    )


@functools.cache
def _update(columns: tuple[str, ...]) -> Update:
    return (
        update(_table)
        .where(_table.c.id == bindparam("row_id"), _table.c.ended_at.is_(None))
        .values({name: bindparam(name, type_=_table.c[name].type) for name in columns})
    )


def _with_session(event: Any, inserted: int) -> Any:
    """The event naming the inserted row where it named the row to be inserted."""
    if event.session_id == _NEW:
        return dataclasses.replace(event, session_id=inserted)
    return event


_channels = cast(Table, Channel.__table__)
_sessions = _table


@functools.cache
def _units_query(postgresql: bool) -> Select[Any]:
    return (
        select(
            _channels.c.id.label("channel_id"),
            _channels.c.event_seq,
            _channels.c.grace_seconds,
            _channels.c.test_mode,
            *_ROW,
        )
        .select_from(_channels)
        .outerjoin(
            _sessions,
            and_(_sessions.c.channel_id == _channels.c.id, _sessions.c.ended_at.is_(None)),
        )
        .where(member_of(_channels.c.id, "channel_ids", postgresql=postgresql))
        .order_by(_channels.c.id)
    )


_LOCK = (
    select(_channels.c.id)
    .where(member_of(_channels.c.id, "channel_ids", postgresql=True))
    .order_by(_channels.c.id)
    .with_for_update(key_share=True)
)
_WRITE_LOCK = (
    update(_channels)
    .where(_channels.c.id == bindparam("channel_id"))
    .values(event_seq=_channels.c.event_seq)
)


async def _units(
    connection: AsyncConnection, channel_ids: Sequence[int], *, node: str, now: float
) -> dict[int, _Unit]:
    """Lock the channels' rows, then read each with its open session.

    The locks come first, as in key changes and deletion, in the order of channel ids
    so that two transactions locking several never wait for each other in a circle.
    PostgreSQL: the lock is a statement of its own. Locking in the query that reads
    the sessions would be wrong under READ COMMITTED: after waiting for the lock,
    PostgreSQL rechecks the locked channel row but keeps the joined session rows of
    the statement's first snapshot, so a transition would fold into a session state
    that the lock holder had just changed (seen: two open sessions of one channel).
    SQLite has no row locks and starts a transaction's write lock only at its first
    write, so a no-op UPDATE comes first: from then on nobody else writes until we
    commit. A channel that is gone has no unit.
    """
    ids = {"channel_ids": sorted(set(channel_ids))}
    postgresql = connection.dialect.name == "postgresql"
    if postgresql:
        await connection.execute(_LOCK, ids)
    else:
        await connection.execute(_WRITE_LOCK, {"channel_id": channel_ids[0]})
    found = (await connection.execute(_units_query(postgresql), ids)).mappings()
    units: dict[int, _Unit] = {}
    for row in found:
        session = row if row["id"] is not None else None  # the channel's open session
        units[row["channel_id"]] = _Unit(
            channel_id=row["channel_id"],
            event_seq=row["event_seq"],
            grace_seconds=row["grace_seconds"],
            test_mode=row["test_mode"],
            row=session,
            state=_state(session),
            node=node,
            now=now,
        )
    return units


async def _unit(connection: AsyncConnection, channel_id: int, *, node: str, now: float) -> _Unit:
    """The one channel's unit; `ChannelNotFound` if it is gone."""
    unit = (await _units(connection, [channel_id], node=node, now=now)).get(channel_id)
    if unit is None:
        raise ChannelNotFound("the channel was deleted")
    return unit


def _state(row: Mapping[Any, Any] | None) -> ChannelState:
    if row is None:
        return ChannelState()
    return ChannelState(
        status=Status(row["status"]),
        session_id=row["id"],
        test=row["test"],
        publishing=row["publishing"],
        media=row["media"],
        grace_until=row["grace_until"],
        pending_reason=EndReason(row["pending_reason"]) if row["pending_reason"] else None,
        since=row["status_since"],
    )


@dataclass(frozen=True, slots=True)
class Start:
    """A publish the ingest node accepted, to be written down."""

    event: PublishStarted
    remote_address: str
    fencing_token: int
    test: bool
    media: bool = False  # media flows already: one transaction for what would be two


@dataclass(frozen=True, slots=True)
class End:
    """A publish that ended, with what it looked like."""

    event: PublishEnded
    kind: EndKind
    grace: float
    summary: Summary


StartRecord = tuple[PublishStarted, Outcome, float]
EndRecord = tuple[PublishEnded, Outcome]


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
) -> StartRecord:
    """A publish was accepted: a new session, or the same one after a reconnect.

    With ``media``, its media flows already: one transaction for what would be two.
    Returns the PublishStarted event as staged (session id, sequence number), the
    status outcome, and the channel's grace period for this session.
    """
    start = Start(event, remote_address, fencing_token, test, media)
    (record,) = await publish_started_many(sessions, [start], default_grace=default_grace, now=now)
    if isinstance(record, ChannelNotFound):
        raise record
    return record


async def publish_started_many(
    sessions: Sessions, starts: Sequence[Start], *, default_grace: float, now: float
) -> list[StartRecord | ChannelNotFound]:
    """`publish_started` for many publishes: a storm's starts in a few transactions.

    A start whose channel is gone gets `ChannelNotFound` and the others go on.
    """
    return await _in_rounds(
        sessions,
        PublishStarted,
        [start.event for start in starts],
        lambda unit, i: _start_in(unit, starts[i], default_grace, now),
        now=now,
    )


T = TypeVar("T")
E = TypeVar("E", PublishStarted, PublishEnded)


async def _in_rounds(
    sessions: Sessions,
    kind: type[E],
    events: Sequence[E],
    fold: Callable[[_Unit, int], T],
    *,
    now: float,
) -> list[tuple[E, Outcome, T] | ChannelNotFound]:
    """Fold each request into its channel's unit, in as few transactions as can be.

    Each transaction holds one request per channel (a second one of the same channel
    waits for the next), so every request sees the one before it. Returns, per
    request, its event as staged, its outcome and what ``fold(unit, index)``
    returned, or `ChannelNotFound` when the channel is gone (the others go on).
    """
    folded: list[tuple[_Unit, T] | ChannelNotFound | None] = [None] * len(events)
    for batch in _rounds([event.channel_id for event in events]):
        async with sessions() as session, session.begin():
            connection = await session.connection()
            channel_ids = [events[i].channel_id for i in batch]
            units = await _units(connection, channel_ids, node=events[batch[0]].node, now=now)
            for i in batch:
                unit = units.get(events[i].channel_id)
                folded[i] = (
                    ChannelNotFound("the channel was deleted")
                    if unit is None
                    else (unit, fold(unit, i))
                )
            await _write(connection, list(units.values()))
    return [
        found
        if isinstance(found, ChannelNotFound)
        else (
            next(e for e in found[0].events if isinstance(e, kind)),
            Outcome(_status(found[0].events), found[0].state.session_id),
            found[1],
        )
        for found in folded
        if found is not None
    ]


def _start_in(unit: _Unit, start: Start, default_grace: float, now: float) -> float:
    """Fold one accepted publish into its channel's unit; returns the session's grace."""
    event = start.event
    node = event.node[:64]
    address = _cut(start.remote_address, 64)
    grace = float(unit.grace_seconds) if unit.grace_seconds is not None else default_grace
    test = start.test or unit.test_mode

    def opened(test_session: bool) -> dict[str, Any]:
        return {
            "channel_id": event.channel_id,
            "key_id": event.key_id,
            "node": node,
            "remote_address": address,
            "started_at": _moment(now),
            "fencing_token": start.fencing_token,
            "test": test_session,
            "publishes": 1,
            "media_bytes": 0,
            "video_frames": 0,
            "audio_frames": 0,
        }

    unit.node = event.node
    unit.apply(
        machine.publish_accepted(unit.state, now=now, test=test, grace=grace),
        opened=opened,
        continued={
            "key_id": event.key_id,
            "node": node,
            "remote_address": address,
            "fencing_token": start.fencing_token,
            "publishes": unit.row["publishes"] + 1 if unit.row else 1,
        },
    )
    unit.events.append(dataclasses.replace(event, session_id=unit.state.session_id))
    if start.media:
        unit.apply(machine.media_flowing(unit.state, now=now))
    return grace


def _rounds(channel_ids: Sequence[int]) -> list[list[int]]:
    """Indexes of the requests, in transactions that hold each channel at most once.

    The order of requests is kept within each channel.
    """
    rounds: list[list[int]] = []
    last_round: dict[int, int] = {}
    for index, channel_id in enumerate(channel_ids):
        number = last_round.get(channel_id, -1) + 1
        if number == len(rounds):
            rounds.append([])
        rounds[number].append(index)
        last_round[channel_id] = number
    return rounds


def _status(events: Iterable[Any]) -> list[StatusChanged]:
    return [event for event in events if isinstance(event, StatusChanged)]


async def media_flowing(
    sessions: Sessions, *, channel_id: int, now: float, node: str, token: int | None = None
) -> Outcome:
    return await _simple(sessions, channel_id, node, machine.media_flowing, now=now, token=token)


async def media_stalled(
    sessions: Sessions,
    *,
    channel_id: int,
    now: float,
    grace: float,
    node: str,
    token: int | None = None,
) -> Outcome:
    return await _simple(
        sessions, channel_id, node, machine.media_stalled, now=now, token=token, grace=grace
    )


async def _simple(
    sessions: Sessions,
    channel_id: int,
    node: str,
    step: Callable[..., Transition],
    *,
    now: float,
    token: int | None,
    **arguments: Any,
) -> Outcome:
    """One transition that needs nothing but the channel's open session.

    ``token``: the reporting publish's fencing token. A report from a publish that no
    longer carries the session (a newer publisher took it over while this one's node
    was frozen or partitioned) is stale and changes nothing: its "media stalled" would
    send the live channel of the newer publisher into Reconnecting.
    """
    async with sessions() as session, session.begin():
        connection = await session.connection()
        unit = await _unit(connection, channel_id, node=node, now=now)
        if unit.row is None:
            return Outcome([], None)
        carried_by = unit.row["fencing_token"]
        if token is not None and carried_by is not None and carried_by != token:
            return Outcome([], unit.state.session_id)
        unit.apply(step(unit.state, now=now, **arguments))
        await _write(connection, [unit])
    return Outcome(_status(unit.events), unit.state.session_id)


async def publish_ended(
    sessions: Sessions,
    *,
    event: PublishEnded,
    kind: EndKind,
    grace: float,
    summary: Summary,
    now: float,
) -> EndRecord:
    """Fold the publish into its session, then let the machine decide what happens next."""
    (record,) = await publish_ended_many(sessions, [End(event, kind, grace, summary)], now=now)
    if isinstance(record, ChannelNotFound):
        raise record
    return record


async def publish_ended_many(
    sessions: Sessions, ends: Sequence[End], *, now: float
) -> list[EndRecord | ChannelNotFound]:
    """`publish_ended` for many publishes, in as few transactions as `publish_started_many`."""
    records = await _in_rounds(
        sessions,
        PublishEnded,
        [end.event for end in ends],
        lambda unit, i: _end_in(unit, ends[i], now),
        now=now,
    )
    return [r if isinstance(r, ChannelNotFound) else (r[0], r[1]) for r in records]


def _end_in(unit: _Unit, end: End, now: float) -> None:
    """Fold one ended publish into its channel's unit."""
    event = end.event
    unit.node = event.node
    row = unit.row
    if row is None or (event.session_id is not None and row["id"] != event.session_id):
        # Its session was closed meanwhile (a lost node, grace elsewhere): only record it.
        unit.events.append(event)
        return
    media_bytes = row["media_bytes"] + event.media_bytes
    unit.rows[row["id"]] = {
        "media_bytes": media_bytes,
        "video_frames": row["video_frames"] + event.video_frames,
        "audio_frames": row["audio_frames"] + event.audio_frames,
        "video_codec": _cut(event.video_codec, 16) or row["video_codec"],
        "audio_codec": _cut(event.audio_codec, 16) or row["audio_codec"],
        **_fold(row, end.summary, now, media_bytes=media_bytes),
    }
    unit.apply(machine.publish_ended(unit.state, now=now, kind=end.kind, grace=end.grace))
    unit.events.append(event)


def _fold(
    row: Mapping[Any, Any], summary: Summary, now: float, *, media_bytes: int
) -> dict[str, Any]:
    """The history columns with one publish's summary folded in (every column, always)."""
    peak = row["peak_kbps"]
    if summary.peak_kbps is not None:
        peak = max(peak or 0.0, summary.peak_kbps)
    duration = now - _epoch(row["started_at"])
    average = row["avg_kbps"]
    if duration > 0:
        average = round((media_bytes + summary.running_bytes) * 8 / 1000 / duration, 1)
    return {
        "encoder": _cut(summary.encoder, 128) or row["encoder"],
        "width": summary.width or row["width"],
        "height": summary.height or row["height"],
        "fps": summary.fps or row["fps"],
        "peak_kbps": peak,
        "health_issues": sorted(set(row["health_issues"] or ()) | set(summary.health_issues)),
        "avg_kbps": average,
        "last_update_at": _moment(now),
    }


async def update_summaries(
    sessions: Sessions, summaries: Mapping[int, Summary], *, now: float
) -> None:
    """Keep live sessions' history current, so a lost node's last minutes are not lost.

    One transaction for all of a node's sessions, one read and one batched write: at
    hundreds of publishers, a statement each would cost more than their media.
    """
    if not summaries:
        return
    async with sessions() as session, session.begin():
        connection = await session.connection()
        rows = (
            await connection.execute(
                select(*_ROW).where(
                    one_of(
                        _table.c.id, summaries, postgresql=connection.dialect.name == "postgresql"
                    ),
                    _table.c.ended_at.is_(None),
                )
            )
        ).mappings()
        values: list[dict[str, Any]] = [
            {
                "row_id": row["id"],
                **_fold(row, summaries[row["id"]], now, media_bytes=row["media_bytes"]),
            }
            for row in rows
        ]
        if values:
            columns = tuple(name for name in values[0] if name != "row_id")
            await connection.execute(_update(columns), values)


def _in_grace() -> tuple[ColumnElement[bool], ...]:
    """Open sessions waiting in Reconnecting for their publisher's return."""
    return (
        PublishSession.ended_at.is_(None),
        PublishSession.status == str(Status.RECONNECTING),
    )


async def expire_grace(
    sessions: Sessions, *, now: float, node: str = "monitor"
) -> list[StatusChanged]:
    """Close sessions whose grace ran out (monitor/grace.py calls this at each deadline)."""
    async with sessions() as session, session.begin():
        due = (
            await session.scalars(
                select(PublishSession.channel_id).where(
                    *_in_grace(), PublishSession.grace_until <= now
                )
            )
        ).all()
    return await _each(sessions, due, node, lambda unit: machine.tick(unit.state, now=now), now=now)


async def next_grace_end(sessions: Sessions) -> float | None:
    """When the earliest grace period still running ends, if any runs (epoch seconds)."""
    async with sessions() as session, session.begin():
        end: float | None = await session.scalar(
            select(func.min(PublishSession.grace_until)).where(*_in_grace())
        )
    return end


async def node_lost(
    sessions: Sessions, *, node: str, now: float, default_grace: float
) -> list[StatusChanged]:
    """A node stopped heartbeating: its channels wait in Reconnecting for their owners."""
    async with sessions() as session, session.begin():
        channel_ids = (
            await session.scalars(
                select(PublishSession.channel_id).where(
                    PublishSession.ended_at.is_(None), PublishSession.node == node
                )
            )
        ).all()

    def lost(unit: _Unit) -> Transition:
        grace = float(unit.grace_seconds) if unit.grace_seconds is not None else default_grace
        return machine.node_lost(unit.state, now=now, grace=grace)

    return await _each(sessions, channel_ids, "monitor", lost, now=now)


# Channels per transaction when the monitor acts on many at once: a dead node's
# hundreds of channels in a few transactions, none holding its locks for long.
_EACH_BATCH = 256


async def _each(
    sessions: Sessions,
    channel_ids: Sequence[int],
    node: str,
    step: Callable[[_Unit], Transition],
    *,
    now: float,
) -> list[StatusChanged]:
    """One transition on each channel's open session, many channels per transaction.

    Channels gone or without an open session by the time they are locked are skipped.
    """
    events: list[StatusChanged] = []
    for start in range(0, len(channel_ids), _EACH_BATCH):
        async with sessions() as session, session.begin():
            connection = await session.connection()
            batch = channel_ids[start : start + _EACH_BATCH]
            units = await _units(connection, batch, node=node, now=now)
            open_units = [unit for unit in units.values() if unit.row is not None]
            for unit in open_units:
                unit.apply(step(unit))
            await _write(connection, open_units)
        for unit in open_units:
            events += _status(unit.events)
    return events
