"""Which database errors are an outage (retry, 503) and which are bugs."""

from __future__ import annotations

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi as dbapi
from sqlalchemy.exc import DBAPIError

from stream_sync.db.engine import unreachable


def wrapped(error: Exception) -> DBAPIError:
    """The error as SQLAlchemy's asyncpg dialect hands it on: a DB-API Error from it."""
    try:
        try:
            raise error
        except Exception as raised:
            raise dbapi.Error(f"{type(raised).__name__}: {raised}") from raised
    except dbapi.Error as translated:
        wrapper = DBAPIError.instance("SELECT 1", {}, translated, dbapi.Error)
        assert type(wrapper) is DBAPIError  # no more specific class: the cause must decide
        return wrapper


def test_a_database_starting_up_is_an_outage() -> None:
    assert unreachable(wrapped(asyncpg.CannotConnectNowError("the database system is starting up")))
    assert unreachable(wrapped(asyncpg.AdminShutdownError("terminating connection")))
    assert unreachable(ConnectionRefusedError(111, "Connection refused"))


def test_a_broken_query_is_not() -> None:
    assert not unreachable(wrapped(asyncpg.UniqueViolationError("duplicate key value")))
    assert not unreachable(wrapped(asyncpg.UndefinedTableError('relation "x" does not exist')))
    assert not unreachable(ValueError("a bug"))
