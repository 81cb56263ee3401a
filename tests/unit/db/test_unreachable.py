"""Which database errors are an outage (retry, 503) and which are bugs."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi as dbapi
from sqlalchemy.exc import DBAPIError

from stream_sync.db.engine import OutageLog, unreachable


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


def test_a_loop_reports_an_outage_once_and_every_bug_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.outage")
    failures = OutageLog(logger, "grace expiry")
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        for _ in range(5):  # a loop going round during an outage
            failures.failed(ConnectionRefusedError(111, "Connection refused"))
        for _ in range(2):
            failures.failed(ValueError("a bug"))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "grace expiry: the database is unreachable (ConnectionRefusedError)"),
        ("ERROR", "grace expiry failed; will retry"),
        ("ERROR", "grace expiry failed; will retry"),
    ]
    assert all(r.exc_info is not None for r in caplog.records if r.levelname == "ERROR")
