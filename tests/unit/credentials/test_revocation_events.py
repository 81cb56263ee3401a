"""Every key that stops being valid is staged as a KeyRevoked event with its change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.credentials import (
    ServerSecrets,
    create_channel,
    delete_channel,
    reset_key,
    revoke_keys,
    revoke_owner_keys,
    rotate_key,
)
from stream_sync.db.models import OutboxEvent
from stream_sync.state import outbox
from stream_sync.state.interfaces import KeyRevoked, StreamKeyReset
from tests.unit.credentials.users import add_user

ACTOR = audit.Actor.cli()
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def _revoked(session: AsyncSession) -> list[KeyRevoked]:
    events = [event for _, event in await outbox.read_since(session, after_id=0)]
    assert all(isinstance(event, KeyRevoked | StreamKeyReset) for event in events)
    return [event for event in events if isinstance(event, KeyRevoked)]


async def test_reset_stages_every_active_key(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    channel = created.channel_id
    assert await _revoked(session) == []  # creating revokes nothing
    rotated = await rotate_key(
        session, secrets=server_secrets, channel_id=channel, actor=ACTOR, now=T0
    )
    assert await _revoked(session) == []  # the previous key stays valid in its overlap
    reset = await reset_key(
        session, secrets=server_secrets, channel_id=channel, actor=ACTOR, now=T0
    )
    assert set(reset.revoked_key_ids) == {created.key_id, rotated.key_id}
    assert await _revoked(session) == [
        KeyRevoked(channel, key_id) for key_id in reset.revoked_key_ids
    ]
    events = [event for _, event in await outbox.read_since(session, after_id=0)]
    # One event for the reset itself (webhooks' key.reset), after its revocations.
    assert events[-1] == StreamKeyReset(
        channel, reset.key_id, revoked_key_ids=list(reset.revoked_key_ids), seq=3
    )


async def test_a_second_rotation_stages_the_oldest_key(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    channel = created.channel_id
    await rotate_key(session, secrets=server_secrets, channel_id=channel, actor=ACTOR, now=T0)
    second = await rotate_key(
        session,
        secrets=server_secrets,
        channel_id=channel,
        actor=ACTOR,
        now=T0 + timedelta(minutes=1),
    )
    assert second.revoked_key_ids == (created.key_id,)
    assert await _revoked(session) == [KeyRevoked(channel, created.key_id)]


async def test_revoke_and_owner_revocation_stage_each_key(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    owner = await add_user(session, "owner@example.com")
    first = await create_channel(
        session, secrets=server_secrets, name="first", actor=ACTOR, owner_id=owner
    )
    second = await create_channel(
        session, secrets=server_secrets, name="second", actor=ACTOR, owner_id=owner
    )
    third = await create_channel(session, secrets=server_secrets, name="third", actor=ACTOR)
    revoked = await revoke_keys(session, channel_id=third.channel_id, actor=ACTOR)
    assert await _revoked(session) == [KeyRevoked(third.channel_id, third.key_id)]
    assert await revoke_keys(session, channel_id=third.channel_id, actor=ACTOR) == ()
    pairs = await revoke_owner_keys(session, owner_id=owner, actor=ACTOR)
    assert pairs == [(first.channel_id, first.key_id), (second.channel_id, second.key_id)]
    assert await _revoked(session) == [
        KeyRevoked(third.channel_id, *revoked),
        *(KeyRevoked(channel_id, key_id) for channel_id, key_id in pairs),
    ]


async def test_delete_stages_the_active_keys_and_keeps_the_channel_id(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    rotated = await rotate_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
    )
    active = await delete_channel(session, channel_id=created.channel_id, actor=ACTOR)
    assert set(active) == {created.key_id, rotated.key_id}
    assert await _revoked(session) == [KeyRevoked(created.channel_id, key_id) for key_id in active]
    async with session.begin():
        columns = (await session.execute(select(OutboxEvent.channel_id, OutboxEvent.seq))).all()
    assert [tuple(row) for row in columns] == [(None, 1), (None, 2)]


async def test_a_failed_reset_stages_nothing(
    session: AsyncSession, server_secrets: ServerSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(audit, "add_entry", broken)
    with pytest.raises(OSError, match="disk full"):
        await reset_key(session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR)
    assert await _revoked(session) == []
