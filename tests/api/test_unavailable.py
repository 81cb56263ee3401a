"""The API while the database is out of reach: a 503 that says so, never a 500."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from stream_sync.api.app import create_app
from stream_sync.db import create_engine, session_factory
from stream_sync.db.engine import unreachable
from tests.support import free_port

from .conftest import Api


async def test_an_unreachable_database_answers_503_and_asks_to_retry(api: Api) -> None:
    signed_in = await api.signed_in("viewer@example.com")  # then the database goes away
    gone = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone")
    context = dataclasses.replace(api.context, sessions=session_factory(gone))
    transport = httpx.ASGITransport(app=create_app(context), client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        client.cookies = signed_in.cookies
        reply = await client.get("/api/channels")
    await gone.dispose()
    assert reply.status_code == 503, reply.text
    assert reply.headers["retry-after"] == "5"
    assert reply.json() == {
        "error": {
            "code": "database_unavailable",
            "message": "the database is unreachable; try again shortly",
        }
    }


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (InterfaceError("SELECT 1", {}, Exception("connection is closed")), True),
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), True),
        (IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (KeyError("a bug"), False),
    ],
)
def test_what_counts_as_an_outage(error: BaseException, outage: bool) -> None:
    assert unreachable(error) is outage
