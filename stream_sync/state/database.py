"""The database engine for fencing tokens and publish locks: what holds while Redis is down.

Fencing tokens always come from here (``counters``), so they keep growing whatever
happens to Redis. The locks are the fallback for the one-publisher rule: each
change is one conditional statement, so two nodes racing for a channel get exactly
one winner on PostgreSQL (row locks, ON CONFLICT) and on SQLite (one writer).

Semantics match the in-process and Redis engines: an expired lease is as good as
absent (acquirable; renew, take_over and holder do not see it), and every change
compares the exact token. Lease times are epoch seconds from each node's clock, so
clocks must agree to well within the TTL (NTP).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync.credentials.errors import ChannelNotFound
from stream_sync.db import driver
from stream_sync.db.engine import autocommit
from stream_sync.db.members import member_of
from stream_sync.db.models import Counter, PublishLock

from .coalesce import Coalescer
from .inprocess import check_successor, check_ttl
from .interfaces import Lease

__all__ = ["FENCING", "DatabaseFencing", "DatabaseLocks", "ReservedFencing"]

FENCING = "fencing"
SEQUENCE = "fencing_tokens"  # PostgreSQL (migration 0005); spelled out in the SQL below

Sessions = async_sessionmaker[AsyncSession]


def _insert(session: AsyncSession, model: Any) -> Any:
    """INSERT with ON CONFLICT support: both dialects spell it the same way."""
    dialect = session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(model)


class DatabaseFencing:
    """Fencing tokens from the database: every token is larger than all before it.

    PostgreSQL: the ``fencing_tokens`` sequence. nextval() holds no lock beyond the
    call, so a storm of admissions does not queue on one row, and a value is never
    handed out twice, even across processes and restarts. SQLite (one process, one
    writer): a counter row, each call its own short transaction, committed before
    the token is used. The row is created if it is missing (the migration inserts
    it; a truncated table must not break ingest).
    """

    def __init__(self, sessions: Sessions, *, name: str = FENCING) -> None:
        self._sessions = sessions
        self._name = name
        self._postgresql = sessions.kw["bind"].dialect.name == "postgresql"
        self._tokens = Coalescer(self._next_tokens)  # a storm's tokens in one statement

    async def next_token(self) -> int:
        return await self._tokens(None)

    async def _next_tokens(self, calls: Sequence[None]) -> list[int]:
        return await self.next_tokens(len(calls))

    async def next_tokens(self, count: int) -> list[int]:
        """``count`` tokens at once, in increasing order."""
        if self._postgresql:  # on every admission: through asyncpg itself (db/driver.py)
            rows = await driver.fetch(self._sessions.kw["bind"], _NEXT_TOKENS, {"n": count})
            return sorted(row[0] for row in rows)
        async with self._sessions() as session, session.begin():
            statement = _insert(session, Counter).values(name=self._name, value=count)
            statement = statement.on_conflict_do_update(
                index_elements=[Counter.name], set_={"value": Counter.value + count}
            ).returning(Counter.value)
            last: int = (await session.execute(statement)).scalar_one()
        return list(range(last - count + 1, last + 1))

    async def observe(self, token: int) -> None:
        """Raise the counter to at least ``token`` (a token issued elsewhere was seen).

        On PostgreSQL, a nextval() between reading the sequence and setting it could
        be overtaken only by as many concurrent tokens as ``token`` is ahead: this
        runs once, after a database outage, when Redis issued a handful.
        """
        if self._postgresql:
            async with autocommit(self._sessions) as connection:
                await connection.execute(
                    text(
                        "SELECT setval('fencing_tokens', CAST(:token AS bigint))"
                        " FROM fencing_tokens WHERE NOT is_called OR last_value < :token"
                    ),
                    {"token": token},
                )
                return
        async with self._sessions() as session, session.begin():
            statement = _insert(session, Counter).values(name=self._name, value=token)
            statement = statement.on_conflict_do_update(
                index_elements=[Counter.name],
                set_={"value": statement.excluded.value},
                where=Counter.value < statement.excluded.value,
            )
            await session.execute(statement)

    async def current(self) -> int:
        """The last token handed out (0 if none)."""
        async with autocommit(self._sessions) as connection:
            if self._postgresql:
                query = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM fencing_tokens"
                return int(await connection.scalar(text(query)))
            value = await connection.scalar(select(Counter.value).where(Counter.name == self._name))
        return value or 0


class ReservedFencing:
    """Tokens for one process, from blocks it reserves in the database.

    For the embedded engine, where one process holds every lock: a token per
    admission need not be a write to SQLite, whose one writer is often busy with
    session rows. Each block is committed before its first token is used, so tokens
    keep growing across restarts; a crash skips the rest of a block.

    A reservation is shared by every caller waiting for it, so it runs as a task of
    its own: an admission refused meanwhile cancels its wait, not the write. (Cancelled
    mid-statement, the write had the SQLite connection torn down while it waited for
    the write lock, and the next admissions waited seconds behind it.)
    """

    def __init__(self, database: DatabaseFencing, *, block: int = 1000) -> None:
        if block < 1:
            raise ValueError("a block holds at least one token")
        self._database = database
        self._block = block
        self._next = 1
        self._last = 0  # the last token of the reserved block
        self._reserving: asyncio.Task[None] | None = None

    async def next_token(self) -> int:
        while self._next > self._last:
            if self._reserving is None:
                self._reserving = asyncio.get_running_loop().create_task(self._reserve())
                self._reserving.add_done_callback(_retrieved)
            await asyncio.shield(self._reserving)
        token = self._next
        self._next += 1
        return token

    async def _reserve(self) -> None:
        try:
            tokens = await self._database.next_tokens(self._block)
            self._next, self._last = tokens[0], tokens[-1]
        finally:
            self._reserving = None


def _retrieved(task: asyncio.Task[None]) -> None:
    """A reservation every waiter gave up on still has its failure looked at (the
    waiters that stayed were told)."""
    if not task.cancelled():
        task.exception()


class DatabaseLocks:
    """`PublishLocks` on the ``publish_locks`` table; tokens come from the caller.

    A holder that lost the race or its lease gets None, never an exception; database
    errors propagate (the caller decides whether ingest can go on), and acquiring a
    channel that no longer exists raises `ChannelNotFound`.
    """

    def __init__(self, sessions: Sessions, *, ttl: float, clock: Callable[[], float] = time.time):
        check_ttl(ttl)
        self.ttl = ttl
        self._sessions = sessions
        self._clock = clock
        self._holders = Coalescer(self._holders_of)

    async def acquire(self, channel_id: int, owner: str, node: str, token: int) -> Lease | None:
        now = self._clock()
        values = self._values(owner, node, token, now)
        try:
            async with self._sessions() as session, session.begin():
                # One statement: a new row, or replacing an expired one. On PostgreSQL
                # a concurrent acquirer waits for the row (or the conflicting insert)
                # and then re-checks the WHERE against what was committed: it finds a
                # live lease and gets no row back.
                statement = _insert(session, PublishLock).values(channel_id=channel_id, **values)
                statement = statement.on_conflict_do_update(
                    index_elements=[PublishLock.channel_id],
                    set_=values,
                    where=PublishLock.expires_at <= now,
                ).returning(*_LEASE_COLUMNS)
                row = (await session.execute(statement)).one_or_none()
        except IntegrityError:  # the foreign key: the channel was deleted
            raise ChannelNotFound(f"there is no channel with id {channel_id}") from None
        return _lease(row)

    async def renew(self, lease: Lease) -> Lease | None:
        now = self._clock()
        async with self._sessions() as session, session.begin():
            row = (
                await session.execute(
                    update(PublishLock)
                    .where(
                        PublishLock.channel_id == lease.channel_id,
                        PublishLock.token == lease.token,
                        PublishLock.expires_at > now,
                    )
                    .values(renewed_at=now, expires_at=now + self.ttl)
                    .returning(*_LEASE_COLUMNS)
                    .execution_options(synchronize_session=False)
                )
            ).one_or_none()
        return _lease(row)

    async def release(self, lease: Lease) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                delete(PublishLock)
                .where(PublishLock.channel_id == lease.channel_id, PublishLock.token == lease.token)
                .execution_options(synchronize_session=False)
            )

    async def take_over(self, stale: Lease, owner: str, node: str, token: int) -> Lease | None:
        check_successor(stale, token)
        now = self._clock()
        async with self._sessions() as session, session.begin():
            row = (
                await session.execute(
                    update(PublishLock)
                    .where(
                        PublishLock.channel_id == stale.channel_id,
                        PublishLock.token == stale.token,
                        PublishLock.expires_at > now,
                    )
                    .values(**self._values(owner, node, token, now))
                    .returning(*_LEASE_COLUMNS)
                    .execution_options(synchronize_session=False)
                )
            ).one_or_none()
        return _lease(row)

    async def holder(self, channel_id: int) -> Lease | None:
        return await self._holders(channel_id)

    async def _holders_of(self, channel_ids: Sequence[int]) -> list[Lease | None]:
        """Asked on every Redis admission, so a storm's questions go in one read."""
        now = self._clock()
        engine = self._sessions.kw["bind"]
        if engine.dialect.name == "postgresql":  # through asyncpg itself (db/driver.py)
            params = {"ids": list(set(channel_ids)), "now": now}
            found = [_lease(row) for row in await driver.fetch(engine, _HOLDERS_PG, params)]
        else:
            async with autocommit(self._sessions) as connection:
                rows = await connection.execute(
                    select(*_LEASE_COLUMNS).where(
                        PublishLock.channel_id.in_(set(channel_ids)), PublishLock.expires_at > now
                    )
                )
                found = [_lease(row) for row in rows]
        leases = {lease.channel_id: lease for lease in found if lease is not None}
        return [leases.get(channel_id) for channel_id in channel_ids]

    def _values(self, owner: str, node: str, token: int, now: float) -> dict[str, Any]:
        return {
            "owner": owner,
            "node": node,
            "token": token,
            "renewed_at": now,
            "expires_at": now + self.ttl,
        }


_LEASE_COLUMNS = (
    PublishLock.channel_id,
    PublishLock.owner,
    PublishLock.token,
    PublishLock.node,
    PublishLock.renewed_at,
)


_NEXT_TOKENS = driver.Statement(
    text("SELECT nextval('fencing_tokens') FROM generate_series(1, :n)")
)
_HOLDERS_PG = driver.Statement(
    select(*_LEASE_COLUMNS).where(
        member_of(PublishLock.channel_id.expression, "ids", postgresql=True),
        PublishLock.expires_at > bindparam("now"),
    )
)


def _lease(row: Any) -> Lease | None:
    """A lease from SQLAlchemy's row or asyncpg's record."""
    if row is None:
        return None
    row = getattr(row, "_mapping", row)  # a record is a mapping already
    return Lease(
        channel_id=row["channel_id"],
        owner=row["owner"],
        token=row["token"],
        node=row["node"],
        renewed_at=row["renewed_at"],
    )
