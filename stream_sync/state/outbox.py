"""The event outbox: lifecycle events committed with their change, read back by consumers.

A writer calls `stage` inside the transaction that makes the change; after the
commit it publishes the returned event on the bus. A consumer that restarted, or a
bus that lost events (Redis restarted empty), catches up with `read_since` from
its cursor (`get_cursor`/`set_cursor`). So nothing committed is ever lost; some
events arrive twice (bus and outbox), which consumers must dedupe.

Ordering and deduplication
--------------------------
* Per channel, ``seq`` is gapless and follows commit order: staging increments
  ``channels.event_seq``, which locks the channel row until commit, so the next
  event of that channel waits for this one's commit (or rollback, which frees the
  number again). A consumer that sees seq n+2 after n knows n+1 is committed.
* Across channels, outbox ids are NOT in commit order on PostgreSQL: a sequence
  hands out ids at insert time, and a transaction with a smaller id may commit after
  one with a larger id was already read. `read_since` therefore re-reads a window
  behind the cursor: the last ``overlap`` ids, and everything staged up to
  ``grace`` before the cursor's row. A row is only missed if its transaction stayed
  open longer than ``grace`` after staging it (plus clock skew between nodes;
  ``created_at`` is the writer's clock). SQLite has one writer at a time, so there
  ids do commit in order.
* Rows in that window come back on every call: skip them by outbox id (`OutboxReader`
  does it for you). To merge with bus events, which carry no outbox id, use
  `dedupe_key`: (channel_id, seq) for events that carry a seq, the key id for
  `KeyRevoked` (a key is revoked once), nothing otherwise (`SeenEvents`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import BigInteger, Row, Table, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from stream_sync.credentials.errors import ChannelNotFound
from stream_sync.db.models import Channel, ConsumerCursor, OutboxEvent, utcnow

from .codec import UnknownEvent, decode_event, encode_event
from .interfaces import BusEvent, KeyRevoked

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_OVERLAP",
    "OutboxReader",
    "SeenEvents",
    "dedupe_key",
    "get_cursor",
    "last_id",
    "read_since",
    "set_cursor",
    "stage",
    "stage_locked",
]

log = logging.getLogger(__name__)

E = TypeVar("E", bound=BusEvent)

DEFAULT_OVERLAP = 100
DEFAULT_GRACE = timedelta(seconds=60)
_NODE_MAX = 64
_CURSOR_NAME_MAX = 64
# Ids of undecodable rows already logged: the overlap window re-reads them.
_REPORTED_MAX = 1000
_reported: set[int] = set()


# Built once: building a statement per call costs more than sending it.
_channels = cast(Table, Channel.__table__)
_SET_SEQ = (
    update(_channels)
    .where(_channels.c.id == bindparam("channel_id"))
    .values(event_seq=bindparam("last_seq", type_=BigInteger()))
)
_STAGE = insert(cast(Table, OutboxEvent.__table__))


async def stage(session: AsyncSession, event: E) -> E:
    """Add an event to the outbox in the caller's open transaction (no commit).

    An event with a ``channel_id`` takes that channel's next sequence number, set
    into its ``seq`` field if it has one (`KeyRevoked` keeps it only in the outbox
    row). Returns the event as stored: publish that one after the commit. Raises
    `ChannelNotFound` if the channel is gone.
    """
    _require_transaction(session, "stage()")
    channel_id: int | None = getattr(event, "channel_id", None)
    seq: int | None = None
    if channel_id is not None:
        seq = await session.scalar(
            update(Channel)
            .where(Channel.id == channel_id)
            .values(event_seq=Channel.event_seq + 1)
            .returning(Channel.event_seq)
            .execution_options(synchronize_session=False)
        )
        if seq is None:
            raise ChannelNotFound(f"there is no channel with id {channel_id}")
        event = _numbered(event, seq)
    await session.execute(_STAGE, _row(event, channel_id, seq, utcnow()))
    return event


async def stage_each(session: AsyncSession, events: Sequence[E]) -> list[E]:
    """`stage` for events of distinct channels, in two statements however many.

    Each takes its channel's next sequence number; the events of channels that are
    gone are left out of the result (and of the outbox), not raised.
    """
    _require_transaction(session, "stage_each()")
    by_channel: dict[int | None, E] = {getattr(e, "channel_id", None): e for e in events}
    if None in by_channel or len(by_channel) != len(events):
        raise ValueError("stage_each() takes one event per channel")
    if not events:
        return []
    rows = await session.execute(
        update(_channels)
        .where(_channels.c.id.in_(list(by_channel)))
        .values(event_seq=_channels.c.event_seq + 1)
        .returning(_channels.c.id, _channels.c.event_seq)
    )
    seqs: dict[int | None, int] = {channel_id: seq for channel_id, seq in rows}
    staged = [(c, _numbered(e, seqs[c])) for c, e in by_channel.items() if c in seqs]
    if staged:
        now = utcnow()
        await session.execute(_STAGE, [_row(e, c, seqs[c], now) for c, e in staged])
    return [e for _, e in staged]


async def stage_locked(
    connection: AsyncConnection, channels: Sequence[tuple[int, int, Sequence[E]]]
) -> list[list[E]]:
    """`stage` for the events of channels whose rows the caller locked and read.

    Each item is (channel id, its ``event_seq`` as read under the lock, its events);
    the events take the next sequence numbers in order. Two statements, however many
    channels and events: one batched write of the new ``event_seq`` values, one of
    the outbox rows. Returns each channel's events as staged.
    """
    staged: list[list[E]] = []
    advances: list[dict[str, int]] = []
    rows: list[dict[str, Any]] = []
    now = utcnow()
    for channel_id, last_seq, events in channels:
        numbered: list[E] = []
        for seq, event in enumerate(events, start=last_seq + 1):
            numbered.append(_numbered(event, seq))
            rows.append(_row(numbered[-1], channel_id, seq, now))
        staged.append(numbered)
        if numbered:
            advances.append({"channel_id": channel_id, "last_seq": last_seq + len(numbered)})
    if advances:
        await connection.execute(_SET_SEQ, advances)
        await connection.execute(_STAGE, rows)
    return staged


def _require_transaction(session: AsyncSession, caller: str) -> None:
    if not session.in_transaction():
        # Autobegin would stage into a transaction that nobody commits.
        raise RuntimeError(f"{caller} runs inside the caller's transaction; begin one first")


def _numbered(event: E, seq: int) -> E:
    """The event with its sequence number, if it has a field for one."""
    if any(field.name == "seq" for field in dataclasses.fields(event)):
        return dataclasses.replace(event, seq=seq)  # type: ignore[call-arg]
    return event


def _row(event: BusEvent, channel_id: int | None, seq: int | None, now: datetime) -> dict[str, Any]:
    """The outbox row of a staged event."""
    node: str | None = getattr(event, "node", None)
    return {
        "created_at": now,
        "type": type(event).__name__,
        "channel_id": channel_id,
        "seq": seq,
        "node": node[:_NODE_MAX] if node else None,
        "payload": encode_event(event),
    }


async def read_since(
    session: AsyncSession,
    *,
    after_id: int,
    limit: int = 500,
    overlap: int = DEFAULT_OVERLAP,
    grace: timedelta = DEFAULT_GRACE,
) -> list[tuple[int, BusEvent]]:
    """Events after ``after_id`` (at most ``limit``) plus the window behind it, by id.

    The window (see the module docstring) holds rows already returned before and
    late commits: dedupe by outbox id. Rows that do not decode (a newer version's
    event types) are skipped and logged once; `OutboxReader` also moves its cursor
    past them. Joins the caller's open transaction, else runs in its own.
    """
    rows = await _read(session, after_id, limit, overlap, grace)
    return [(row_id, event) for row_id, _, event in rows if event is not None]


async def last_id(session: AsyncSession) -> int:
    """The newest outbox id (0 when empty): where a consumer that wants no history starts."""
    async with _transaction(session):
        return await session.scalar(select(func.max(OutboxEvent.id))) or 0


async def get_cursor(session: AsyncSession, *, name: str) -> int:
    """The last outbox id the consumer ``name`` handled; 0 if it never saved one."""
    async with _transaction(session):
        value = await session.scalar(
            select(ConsumerCursor.last_event_id).where(ConsumerCursor.name == name)
        )
    return value or 0


async def set_cursor(session: AsyncSession, *, name: str, last_event_id: int) -> None:
    """Save a consumer's cursor (insert or overwrite; it may move back, for a replay).

    Joins the caller's open transaction (so the cursor can commit with what the
    consumer wrote), else commits on its own.
    """
    if len(name) > _CURSOR_NAME_MAX:
        raise ValueError(f"a cursor name has at most {_CURSOR_NAME_MAX} characters")
    values = {"name": name, "last_event_id": last_event_id, "updated_at": utcnow()}
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(ConsumerCursor).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[ConsumerCursor.name],
        set_={"last_event_id": last_event_id, "updated_at": values["updated_at"]},
    )
    async with _transaction(session):
        await session.execute(statement)


class OutboxReader:
    """Reads the outbox from a cursor and returns every committed row exactly once.

    Remembers the ids it returned that are still inside the re-read window, so late
    commits come through and window rows do not come back. Not shared between
    tasks. Save `cursor` with `set_cursor` after handling what `poll` returned; on
    restart, rows in the window behind a saved cursor are returned again (at least
    once across restarts), which `SeenEvents` or idempotent handling absorbs.
    """

    def __init__(
        self,
        after_id: int = 0,
        *,
        limit: int = 500,
        overlap: int = DEFAULT_OVERLAP,
        grace: timedelta = DEFAULT_GRACE,
    ) -> None:
        self.cursor = after_id
        self._limit = limit
        self._overlap = overlap
        self._grace = grace
        self._returned: dict[int, datetime] = {}

    async def poll(self, session: AsyncSession) -> list[tuple[int, BusEvent]]:
        """Rows not returned before, by id; the cursor moves to the largest id seen."""
        return [(row_id, event) for row_id, _, event in await self.poll_rows(session)]

    async def poll_rows(self, session: AsyncSession) -> list[tuple[int, datetime, BusEvent]]:
        """`poll` with each row's ``created_at`` (the staging transaction's clock)."""
        rows = await _read(session, self.cursor, self._limit, self._overlap, self._grace)
        fresh = [
            (row_id, created_at, event)
            for row_id, created_at, event in rows
            if event is not None and row_id not in self._returned
        ]
        for row_id, created_at, _ in rows:
            self._returned[row_id] = created_at
            self.cursor = max(self.cursor, row_id)
        anchor = self._returned.get(self.cursor)
        horizon = anchor - self._grace if anchor and self._grace > timedelta(0) else None
        for row_id, created_at in list(self._returned.items()):
            if row_id <= self.cursor - self._overlap and (horizon is None or created_at < horizon):
                del self._returned[row_id]
        return fresh


def dedupe_key(event: BusEvent) -> Hashable | None:
    """What identifies an event across the bus and the outbox; None if nothing does.

    (channel_id, seq) for events numbered by the outbox, the key id for
    `KeyRevoked` (each key is revoked once). Others (a seq of 0: never recorded;
    node events) cannot be told apart and are handled each time.
    """
    if isinstance(event, KeyRevoked):
        return ("KeyRevoked", event.key_id)
    seq = getattr(event, "seq", 0)
    channel_id = getattr(event, "channel_id", None)
    if seq and channel_id is not None:
        return (type(event).__name__, channel_id, seq)
    return None


class SeenEvents:
    """The most recent ``capacity`` dedupe keys, for merging bus and outbox deliveries."""

    def __init__(self, capacity: int = 20_000) -> None:
        self._keys: OrderedDict[Hashable, None] = OrderedDict()
        self._capacity = capacity

    def first_time(self, event: BusEvent) -> bool:
        """True the first time an event is seen (always for events without a key)."""
        key = dedupe_key(event)
        if key is None:
            return True
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return True


async def _read(
    session: AsyncSession, after_id: int, limit: int, overlap: int, grace: timedelta
) -> list[tuple[int, datetime, BusEvent | None]]:
    """Window and newer rows by id; None for a row that no longer decodes."""
    if limit < 1 or overlap < 0:
        raise ValueError("limit must be positive and overlap not negative")
    columns = select(OutboxEvent.id, OutboxEvent.created_at, OutboxEvent.payload)
    async with _transaction(session):
        rows: list[Row[tuple[int, datetime, Any]]] = []
        if after_id > 0:
            anchor = await session.scalar(
                select(OutboxEvent.created_at).where(OutboxEvent.id == after_id)
            )
            behind = OutboxEvent.id > after_id - overlap
            if anchor is not None and grace > timedelta(0):
                behind = or_(behind, OutboxEvent.created_at >= anchor - grace)
            query = columns.where(OutboxEvent.id <= after_id, behind).order_by(OutboxEvent.id)
            rows.extend((await session.execute(query)).all())
        # A query of its own, so a large window never crowds out new rows.
        query = columns.where(OutboxEvent.id > after_id).order_by(OutboxEvent.id).limit(limit)
        rows.extend((await session.execute(query)).all())
    return [(row.id, row.created_at, _decode(row.id, row.payload)) for row in rows]


def _decode(row_id: int, payload: object) -> BusEvent | None:
    try:
        return decode_event(payload)
    except UnknownEvent as exc:
        # Written by a newer version, or an event type since removed.
        if row_id not in _reported and len(_reported) < _REPORTED_MAX:
            _reported.add(row_id)
            log.warning("outbox row %d does not decode, skipped: %s", row_id, exc)
        return None


@contextlib.asynccontextmanager
async def _transaction(session: AsyncSession) -> AsyncIterator[None]:
    """Join the caller's open transaction, or run in one of our own (committed)."""
    if session.in_transaction():
        yield
        return
    async with session.begin():
        yield
