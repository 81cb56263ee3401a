"""Channels: ownership, lookup, listing, deletion, ingest mapping; audit in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.credentials import (
    ChannelInfo,
    ChannelNotFound,
    GeneratedKey,
    OwnerNotFound,
    RefusalReason,
    ServerSecrets,
    assign_orphan_channels,
    create_channel,
    delete_channel,
    find_channel,
    generate_key,
    get_channel,
    list_channels,
    reset_key,
    revoke_owner_keys,
    rotate_key,
    service,
    set_channel_server,
    verify_key,
)
from stream_sync.db import Channel, IngestServer, StreamKey
from stream_sync.servers import ServerNotFound
from tests.unit.credentials.users import add_user, audit_count, audit_rows

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ACTOR = audit.Actor.cli()


async def test_without_an_admin_a_channel_has_no_owner(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    await add_user(session, "streamer@example.com", role="streamer")
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    assert created.owner_id is None
    assert (await get_channel(session, created.channel_id)).owner_id is None


async def test_the_first_enabled_admin_owns_new_channels(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    await add_user(session, "streamer@example.com", role="streamer")
    await add_user(session, "gone@example.com", role="admin", disabled_at=T0)
    first = await add_user(session, "first@example.com", role="admin")
    await add_user(session, "second@example.com", role="admin")
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    assert created.owner_id == first
    assert (await get_channel(session, created.channel_id)).owner_id == first


async def test_an_explicit_owner_is_kept_and_must_exist(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    await add_user(session, "admin@example.com", role="admin")
    streamer = await add_user(session, "streamer@example.com")
    created = await create_channel(
        session, secrets=server_secrets, name="main", actor=ACTOR, owner_id=streamer
    )
    assert created.owner_id == streamer
    with pytest.raises(OwnerNotFound) as caught:
        await create_channel(
            session, secrets=server_secrets, name="other", actor=ACTOR, owner_id=streamer + 99
        )
    assert caught.value.status == 422
    assert [c.name for c in await list_channels(session)] == ["main"]


async def test_creation_is_audited_with_the_key_id_never_the_key(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    actor = audit.Actor("admin@example.com", source_address="198.51.100.4")
    created = await create_channel(session, secrets=server_secrets, name="main", actor=actor)
    entries = await audit_rows(session)
    assert [(e.action, e.channel_id, e.key_id) for e in entries] == [
        ("channel.created", created.channel_id, None),
        ("key.created", created.channel_id, created.key_id),
    ]
    assert {(e.actor, e.source_address) for e in entries} == {("admin@example.com", "198.51.100.4")}
    assert entries[0].details == {"name": "main", "owner_id": None}
    assert all(created.key not in repr(e) for e in entries)


async def test_find_by_name_or_public_id(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    expected = ChannelInfo(
        id=created.channel_id,
        public_id=created.public_id,
        name="main",
        owner_id=None,
        ingest_server_id=None,
        created_at=(await get_channel(session, created.channel_id)).created_at,
    )
    assert await find_channel(session, "main") == expected
    assert await find_channel(session, created.public_id) == expected
    with pytest.raises(ChannelNotFound, match="'ghost'"):
        await find_channel(session, "ghost")
    with pytest.raises(ChannelNotFound, match="id 999"):
        await get_channel(session, 999)


async def test_a_public_id_wins_over_a_name_that_imitates_it(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    victim = await create_channel(session, secrets=server_secrets, name="victim", actor=ACTOR)
    lookalike = victim.public_id.lower()
    async with session.begin():
        # A name equal to another channel's public id (possible only if the id
        # has no capitals; forced here).
        await session.execute(
            update(Channel).where(Channel.id == victim.channel_id).values(public_id=lookalike)
        )
    await create_channel(session, secrets=server_secrets, name=lookalike, actor=ACTOR)
    assert (await find_channel(session, lookalike)).id == victim.channel_id


async def test_not_found_never_echoes_a_pasted_key(session: AsyncSession) -> None:
    pasted = generate_key().key
    with pytest.raises(ChannelNotFound) as caught:
        await find_channel(session, pasted)
    assert pasted not in str(caught.value)
    assert pasted.split("_")[2] not in str(caught.value)


async def test_list_filters_by_owner(session: AsyncSession, server_secrets: ServerSecrets) -> None:
    alice = await add_user(session, "alice@example.com")
    bob = await add_user(session, "bob@example.com")
    for name, owner in (("a1", alice), ("b1", bob), ("a2", alice), ("nobody", None)):
        await create_channel(
            session, secrets=server_secrets, name=name, actor=ACTOR, owner_id=owner
        )
    assert [c.name for c in await list_channels(session, owner_id=alice)] == ["a1", "a2"]
    assert [c.name for c in await list_channels(session, owner_id=bob)] == ["b1"]
    everything = await list_channels(session)
    assert [(c.name, c.owner_id) for c in everything] == [
        ("a1", alice),
        ("a2", alice),
        ("b1", bob),
        ("nobody", None),
    ]


async def test_orphans_go_to_the_first_admin(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    owner = await add_user(session, "streamer@example.com")
    await create_channel(session, secrets=server_secrets, name="owned", actor=ACTOR, owner_id=owner)
    for name in ("one", "two"):
        await create_channel(session, secrets=server_secrets, name=name, actor=ACTOR)
    admin = await add_user(session, "admin@example.com", role="admin")
    assert await assign_orphan_channels(session, owner_id=admin) == 2
    assert not session.in_transaction()
    owners = {c.name: c.owner_id for c in await list_channels(session)}
    assert owners == {"owned": owner, "one": admin, "two": admin}
    assert await assign_orphan_channels(session, owner_id=admin) == 0


async def test_revoke_owner_keys_covers_every_channel_of_the_owner(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    owner = await add_user(session, "streamer@example.com")
    other = await add_user(session, "other@example.com")
    first = await create_channel(
        session, secrets=server_secrets, name="first", actor=ACTOR, owner_id=owner
    )
    second = await create_channel(
        session, secrets=server_secrets, name="second", actor=ACTOR, owner_id=owner
    )
    kept = await create_channel(
        session, secrets=server_secrets, name="kept", actor=ACTOR, owner_id=other
    )
    rotation = await rotate_key(
        session, secrets=server_secrets, channel_id=second.channel_id, actor=ACTOR
    )
    pairs = await revoke_owner_keys(session, owner_id=owner, actor=ACTOR)
    assert pairs == sorted(
        [
            (first.channel_id, first.key_id),
            (second.channel_id, second.key_id),
            (second.channel_id, rotation.key_id),
        ]
    )
    for key in (first.key, second.key, rotation.key):
        check = await verify_key(session, secrets=server_secrets, presented=key)
        assert check.reason is RefusalReason.REVOKED
    assert (await verify_key(session, secrets=server_secrets, presented=kept.key)).ok
    entries = await audit_rows(session, "key.revoked")
    assert sorted((e.channel_id, e.key_id) for e in entries) == pairs
    assert {str(e.details) for e in entries} == {str({"owner_id": owner})}


async def test_delete_channel_returns_its_active_keys_and_cascades(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    rotation = await rotate_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
    )
    old = await reset_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
    )
    assert set(old.revoked_key_ids) == {created.key_id, rotation.key_id}
    active = await delete_channel(session, channel_id=created.channel_id, actor=ACTOR)
    assert active == [old.key_id]
    assert await list_channels(session) == []
    async with session.begin():
        assert await session.scalar(select(func.count()).select_from(StreamKey)) == 0
    # The audit trail outlives the channel, its references nulled, its name kept.
    entries = await audit_rows(session)
    assert {e.channel_id for e in entries} == {None}
    deleted = [e for e in entries if e.action == "channel.deleted"]
    assert [e.details for e in deleted] == [
        {
            "channel_id": created.channel_id,
            "name": "main",
            "public_id": created.public_id,
            "active_key_ids": [old.key_id],
        }
    ]
    with pytest.raises(ChannelNotFound):
        await delete_channel(session, channel_id=created.channel_id, actor=ACTOR)
    check = await verify_key(session, secrets=server_secrets, presented=old.key)
    assert check.reason is RefusalReason.UNKNOWN


async def test_channel_to_ingest_server_mapping(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    async with session.begin():
        server = IngestServer(name="eu-1", rtmp_url="rtmp://eu-1.example.com/live", capacity=10)
        session.add(server)
        await session.flush()
        server_id = server.id
    info = await set_channel_server(
        session, channel_id=created.channel_id, server_id=server_id, actor=ACTOR
    )
    assert info.ingest_server_id == server_id
    assert await get_channel(session, created.channel_id) == info
    [summary] = await list_channels(session)
    assert summary.ingest_server_id == server_id
    with pytest.raises(ServerNotFound) as caught:
        await set_channel_server(
            session, channel_id=created.channel_id, server_id=server_id + 1, actor=ACTOR
        )
    assert caught.value.status == 404
    unmapped = await set_channel_server(
        session, channel_id=created.channel_id, server_id=None, actor=ACTOR
    )
    assert unmapped.ingest_server_id is None
    entries = await audit_rows(session, "channel.mapped")
    assert [e.details for e in entries] == [
        {"server_id": server_id, "previous_server_id": None},
        {"server_id": None, "previous_server_id": server_id},
    ]


async def _failing_after_staging(monkeypatch: pytest.MonkeyPatch, action: str) -> None:
    """Make add_entry stage its row and then fail, as a crash before commit would."""
    real = audit.add_entry

    def stage_then_fail(session: AsyncSession, **kwargs: Any) -> None:
        real(session, **kwargs)
        if kwargs["action"] == action:
            raise RuntimeError("crash after staging")

    monkeypatch.setattr(audit, "add_entry", stage_then_fail)


async def test_a_failure_after_staging_rolls_back_change_and_audit(
    session: AsyncSession, server_secrets: ServerSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    before = await audit_count(session)
    await _failing_after_staging(monkeypatch, "key.reset")
    with pytest.raises(RuntimeError, match="crash after staging"):
        await reset_key(session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR)
    assert not session.in_transaction()
    assert await audit_count(session) == before
    assert (await verify_key(session, secrets=server_secrets, presented=created.key)).ok
    async with session.begin():
        assert await session.scalar(select(func.count()).select_from(StreamKey)) == 1


async def test_a_failed_create_leaves_no_channel_and_no_audit(
    session: AsyncSession, server_secrets: ServerSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _failing_after_staging(monkeypatch, "key.created")
    with pytest.raises(RuntimeError, match="crash after staging"):
        await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    assert await audit_count(session) == 0
    assert await list_channels(session) == []


async def test_a_retried_reset_writes_one_audit_row(
    session: AsyncSession, server_secrets: ServerSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    colliding = GeneratedKey(key_id=created.key_id, key=created.key)
    keys = iter([colliding, generate_key()])
    monkeypatch.setattr(service, "generate_key", lambda: next(keys))
    reset = await reset_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
    )
    assert [e.key_id for e in await audit_rows(session, "key.reset")] == [reset.key_id]
