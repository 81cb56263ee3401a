"""The admission path's reads on PostgreSQL, sent through asyncpg itself.

Each Redis admission reads the database up to three times: the key when the cache
is cold, a fencing token, and the lock holder left from a Redis outage. Through
SQLAlchemy's asyncio layer, each such read cost 350-600 us of this process's CPU (a
session, the pool's checkout and return, greenlet switches, the compiled cache's
key) against some 60 us for the query itself in asyncpg; at 200 publishers it
was the largest cost of a worker after the media. So these few statements run on
the pooled connection's own asyncpg connection: SQLAlchemy still owns the pool, its
size, its connects and its reset on return; the statement is SQLAlchemy's, compiled
once; failures come out as SQLAlchemy's errors, so callers catch what they did.

PostgreSQL only: SQLite's reads go through SQLAlchemy as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, cast

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from .engine import CONNECTING_ERRORS

__all__ = ["Statement", "fetch"]

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]

# The connection is gone or going (the server shutting down or killing it included):
# it is dropped from the pool, not handed out again, and the error is an outage.
_BROKEN = (*CONNECTING_ERRORS, asyncpg.InterfaceError)


class Statement:
    """A SQLAlchemy statement as asyncpg takes it: its text, and its parameters' order."""

    __slots__ = ("names", "sql")

    def __init__(self, statement: ClauseElement) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=_DIALECT))
        self.sql = str(compiled)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


async def fetch(
    engine: AsyncEngine, statement: Statement, params: Mapping[str, Any]
) -> Sequence[asyncpg.Record]:
    """The rows of one read, on a pooled connection (no transaction: each statement
    commits by itself, as with ``autocommit``)."""
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        try:
            rows: Sequence[asyncpg.Record] = await driver.fetch(
                statement.sql, *statement.arguments(params)
            )
        except BaseException as exc:
            lost = isinstance(exc, _BROKEN) or driver.is_closed()
            if lost or not isinstance(exc, asyncpg.PostgresError):
                # Gone, or in a state nobody knows (cancelled mid-query, the protocol
                # confused by a server that went away meanwhile): not handed out again.
                with contextlib.suppress(Exception):
                    await connection.invalidate(exc if isinstance(exc, Exception) else None)
            if not isinstance(exc, Exception):
                raise
            error = OperationalError if lost else DBAPIError  # else: the query's own fault
            raise error(statement.sql, dict(params), exc) from exc
        return rows
