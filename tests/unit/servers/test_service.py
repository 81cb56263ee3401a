from __future__ import annotations

import os
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.credentials import (
    ServerSecrets,
    create_channel,
    generate_key,
    get_channel,
    set_channel_server,
)
from stream_sync.errors import DomainError
from stream_sync.servers import (
    InvalidServer,
    ServerExists,
    ServerInfo,
    ServerNotFound,
    add_server,
    get_server,
    list_servers,
    remove_server,
    update_server,
)

ACTOR = audit.Actor.cli()


async def _add(session: AsyncSession, name: str = "eu-1", **kwargs: Any) -> ServerInfo:
    kwargs.setdefault("rtmp_url", f"rtmp://{name}.example.com/live")
    return await add_server(session, name=name, actor=ACTOR, **kwargs)


async def _entries(session: AsyncSession) -> list[audit.AuditView]:
    return list(reversed(await audit.list_entries(session)))


async def test_add_list_and_get(session: AsyncSession) -> None:
    eu = await _add(session, "eu-1", region="eu-west", capacity=250)
    us = await _add(session, "us-1", rtmp_url="rtmps://us-1.example.com:443/live/")
    assert (eu.name, eu.rtmp_url, eu.region, eu.capacity, eu.draining) == (
        "eu-1",
        "rtmp://eu-1.example.com/live",
        "eu-west",
        250,
        False,
    )
    assert us.rtmp_url == "rtmps://us-1.example.com:443/live"  # trailing slash dropped
    assert (us.capacity, us.region) == (100, None)
    assert await list_servers(session) == [eu, us]
    assert await get_server(session, ref="us-1") == us
    assert await get_server(session, ref=str(us.id)) == us
    assert not session.in_transaction()
    [entry, _] = await _entries(session)
    assert (entry.action, entry.details) == (
        "ingest_server.added",
        {
            "server_id": eu.id,
            "name": "eu-1",
            "rtmp_url": "rtmp://eu-1.example.com/live",
            "region": "eu-west",
            "capacity": 250,
        },
    )


async def test_duplicate_names_are_refused(session: AsyncSession) -> None:
    await _add(session, "eu-1")
    with pytest.raises(ServerExists, match="'eu-1'") as caught:
        await _add(session, "eu-1", rtmp_url="rtmp://elsewhere.example.com/live")
    assert (caught.value.code, caught.value.status) == ("ingest_server_exists", 409)
    assert len(await list_servers(session)) == 1
    assert len(await _entries(session)) == 1


@pytest.mark.parametrize("name", ["", "EU", "-eu", "eu 1", "eu.1", "x" * 65, "123", "é", "eu\n"])
async def test_invalid_names(session: AsyncSession, name: str) -> None:
    with pytest.raises(InvalidServer, match="server name") as caught:
        await _add(session, name, rtmp_url="rtmp://ok.example.com/live")
    assert caught.value.status == 422


@pytest.mark.parametrize(
    "url",
    [
        "http://eu.example.com/live",
        "rtmp:///live",
        "rtmp://:1935/live",
        "eu.example.com/live",
        "rtmp://user:pass@eu.example.com/live",
        "rtmp://eu.example.com:99999/live",
        "rtmp://eu.example.com:0/live",
        "rtmp://eu.example.com/live?token=x",
        "rtmp://eu.example.com/live#x",
        "rtmp://eu.example.com/li ve",
        "rtmp://eu.example.com/live\n",
        "rtmp://exämple.com/live",
        "rtmp://eu.example.com/" + "x" * 250,
    ],
)
async def test_invalid_urls_are_refused_without_echo(session: AsyncSession, url: str) -> None:
    with pytest.raises(InvalidServer, match="RTMP URL") as caught:
        await _add(session, "eu-1", rtmp_url=url)
    assert url not in str(caught.value)
    assert await list_servers(session) == []


async def test_a_url_holding_a_stream_key_is_refused_without_echo(session: AsyncSession) -> None:
    key = generate_key().key
    with pytest.raises(InvalidServer, match="stream key") as caught:
        await _add(session, "eu-1", rtmp_url=f"rtmp://eu.example.com/live/{key}")
    assert key.split("_")[2] not in str(caught.value)


@pytest.mark.parametrize("capacity", [-1, 100_001, True, 1.5])
async def test_invalid_capacities(session: AsyncSession, capacity: Any) -> None:
    with pytest.raises(InvalidServer, match="capacity"):
        await _add(session, "eu-1", capacity=capacity)


@pytest.mark.parametrize("capacity", [0, 100_000])
async def test_capacity_limits_are_inclusive(session: AsyncSession, capacity: int) -> None:
    assert (await _add(session, "eu-1", capacity=capacity)).capacity == capacity


@pytest.mark.parametrize("region", ["", "eu west", "x" * 65, "-eu"])
async def test_invalid_regions(session: AsyncSession, region: str) -> None:
    with pytest.raises(InvalidServer, match="region"):
        await _add(session, "eu-1", region=region)


async def test_get_unknown_server(session: AsyncSession) -> None:
    for ref in ("nope", "42", "9" * 40, generate_key().key):
        with pytest.raises(ServerNotFound) as caught:
            await get_server(session, ref=ref)
        assert caught.value.status == 404
        assert "ssk_" not in str(caught.value)


async def test_update_changes_only_what_is_given(session: AsyncSession) -> None:
    server = await _add(session, "eu-1", region="eu-west")
    updated = await update_server(
        session, server_id=server.id, actor=ACTOR, capacity=5, draining=True
    )
    assert (updated.capacity, updated.draining, updated.region, updated.rtmp_url) == (
        5,
        True,
        "eu-west",
        server.rtmp_url,
    )
    assert await get_server(session, ref="eu-1") == updated
    cleared = await update_server(
        session, server_id=server.id, actor=ACTOR, region="", rtmp_url="rtmps://new.example.com/x"
    )
    assert (cleared.region, cleared.rtmp_url) == (None, "rtmps://new.example.com/x")
    assert await get_server(session, ref="eu-1") == cleared
    # Nothing changed: nothing recorded.
    same = await update_server(session, server_id=server.id, actor=ACTOR, capacity=5)
    assert same == cleared
    updates = [e for e in await _entries(session) if e.action == "ingest_server.updated"]
    assert [e.details for e in updates] == [
        {"server_id": server.id, "name": "eu-1", "changes": {"capacity": 5, "draining": True}},
        {
            "server_id": server.id,
            "name": "eu-1",
            "changes": {"rtmp_url": "rtmps://new.example.com/x", "region": None},
        },
    ]
    with pytest.raises(InvalidServer):
        await update_server(session, server_id=server.id, actor=ACTOR, capacity=-5)
    with pytest.raises(ServerNotFound):
        await update_server(session, server_id=server.id + 1, actor=ACTOR, capacity=1)


async def test_removing_a_server_unmaps_its_channels(session: AsyncSession) -> None:
    secrets = ServerSecrets(os.urandom(32), os.urandom(32))
    server = await _add(session, "eu-1")
    channel = await create_channel(session, secrets=secrets, name="main", actor=ACTOR)
    await set_channel_server(
        session, channel_id=channel.channel_id, server_id=server.id, actor=ACTOR
    )
    await remove_server(session, server_id=server.id, actor=ACTOR)
    assert await list_servers(session) == []
    assert (await get_channel(session, channel.channel_id)).ingest_server_id is None
    removed = [e for e in await _entries(session) if e.action == "ingest_server.removed"]
    assert [e.details for e in removed] == [
        {"server_id": server.id, "name": "eu-1", "unmapped_channels": 1}
    ]
    with pytest.raises(ServerNotFound):
        await remove_server(session, server_id=server.id, actor=ACTOR)


def test_server_errors_are_domain_errors() -> None:
    for error in (ServerNotFound, ServerExists, InvalidServer):
        assert issubclass(error, DomainError)
    assert {e.status for e in (ServerNotFound, ServerExists, InvalidServer)} == {404, 409, 422}
