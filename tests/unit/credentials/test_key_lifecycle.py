"""Rotation with overlap, reset, revoke, reveal and hints; the key states they leave."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync import audit
from stream_sync.credentials import (
    ChannelNotFound,
    InvalidOverlap,
    KeyDecryptionError,
    NoActiveKey,
    RefusalReason,
    ServerSecrets,
    create_channel,
    key_hint,
    list_channels,
    reset_key,
    reveal_key,
    revoke_keys,
    rotate_key,
    verify_key,
)
from stream_sync.credentials.service import CreatedChannel
from stream_sync.db import StreamKey, User
from tests.unit.credentials.users import add_user, audit_rows

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ACTOR = audit.Actor("admin@example.com", user_id=None, source_address="192.0.2.7")


async def _channel(session: AsyncSession, secrets: ServerSecrets) -> CreatedChannel:
    return await create_channel(session, secrets=secrets, name="main", actor=ACTOR, now=T0)


async def _reason(
    session: AsyncSession, secrets: ServerSecrets, key: str, now: datetime
) -> RefusalReason | None:
    check = await verify_key(session, secrets=secrets, presented=key, now=now)
    assert check.ok is (check.reason is None)
    return check.reason


async def test_rotated_key_works_until_its_expiry_then_is_expired(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    rotation = await rotate_key(
        session,
        secrets=server_secrets,
        channel_id=created.channel_id,
        actor=ACTOR,
        overlap=10 * MINUTE,
        now=T0,
    )
    assert (rotation.previous_key_id, rotation.previous_expires_at) == (
        created.key_id,
        T0 + 10 * MINUTE,
    )
    assert rotation.revoked_key_ids == ()
    assert rotation.key not in repr(rotation)
    # Both keys verify during the overlap...
    for now in (T0, T0 + 9 * MINUTE):
        assert await _reason(session, server_secrets, created.key, now) is None
        assert await _reason(session, server_secrets, rotation.key, now) is None
    # ...and the old one is expired, not revoked, from its expiry on.
    for now in (T0 + 10 * MINUTE, T0 + 60 * MINUTE):
        assert await _reason(session, server_secrets, created.key, now) is RefusalReason.EXPIRED
        assert await _reason(session, server_secrets, rotation.key, now) is None
    expired = await verify_key(
        session, secrets=server_secrets, presented=created.key, now=T0 + 10 * MINUTE
    )
    assert (expired.channel_id, expired.channel_name) == (created.channel_id, "main")


async def test_list_shows_the_rotating_key_until_it_expires(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    rotation = await rotate_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR, now=T0
    )
    [during] = await list_channels(session, now=T0 + MINUTE)
    assert (during.key_id, during.rotating_key_ids) == (rotation.key_id, (created.key_id,))
    [after] = await list_channels(session, now=T0 + 11 * MINUTE)
    assert (after.key_id, after.rotating_key_ids) == (rotation.key_id, ())


async def test_rotating_again_revokes_the_older_rotated_out_key(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    first = await rotate_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR, now=T0
    )
    second = await rotate_key(
        session,
        secrets=server_secrets,
        channel_id=created.channel_id,
        actor=ACTOR,
        now=T0 + MINUTE,
    )
    assert second.previous_key_id == first.key_id
    assert second.revoked_key_ids == (created.key_id,)  # at most one key in overlap
    now = T0 + 2 * MINUTE
    assert await _reason(session, server_secrets, created.key, now) is RefusalReason.REVOKED
    assert await _reason(session, server_secrets, first.key, now) is None
    assert await _reason(session, server_secrets, second.key, now) is None
    [summary] = await list_channels(session, now=now)
    assert summary.rotating_key_ids == (first.key_id,)


async def test_rotation_after_expiry_revokes_nothing(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    await rotate_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR, now=T0
    )
    later = await rotate_key(
        session,
        secrets=server_secrets,
        channel_id=created.channel_id,
        actor=ACTOR,
        now=T0 + 30 * MINUTE,
    )
    assert later.revoked_key_ids == ()
    reason = await _reason(session, server_secrets, created.key, T0 + 31 * MINUTE)
    assert reason is RefusalReason.EXPIRED


async def test_zero_overlap_ends_the_old_key_at_once(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    await rotate_key(
        session,
        secrets=server_secrets,
        channel_id=created.channel_id,
        actor=ACTOR,
        overlap=timedelta(0),
        now=T0,
    )
    assert await _reason(session, server_secrets, created.key, T0) is RefusalReason.EXPIRED


@pytest.mark.parametrize("overlap", [timedelta(seconds=-1), timedelta(days=8)])
async def test_overlap_out_of_range_is_refused(
    session: AsyncSession, server_secrets: ServerSecrets, overlap: timedelta
) -> None:
    created = await _channel(session, server_secrets)
    with pytest.raises(InvalidOverlap) as caught:
        await rotate_key(
            session,
            secrets=server_secrets,
            channel_id=created.channel_id,
            actor=ACTOR,
            overlap=overlap,
        )
    assert caught.value.status == 422
    assert await _reason(session, server_secrets, created.key, T0) is None


async def test_rotation_is_audited(session: AsyncSession, server_secrets: ServerSecrets) -> None:
    created = await _channel(session, server_secrets)
    rotation = await rotate_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR, now=T0
    )
    [entry] = await audit_rows(session, "key.rotated")
    assert (entry.key_id, entry.channel_id, entry.actor, entry.source_address, entry.at) == (
        rotation.key_id,
        created.channel_id,
        "admin@example.com",
        "192.0.2.7",
        T0,
    )
    assert entry.details == {
        "previous_key_id": created.key_id,
        "previous_expires_at": (T0 + 10 * MINUTE).isoformat(),
        "revoked_key_ids": [],
    }


async def test_reset_revokes_the_current_and_the_rotated_out_key(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    rotation = await rotate_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR, now=T0
    )
    reset = await reset_key(
        session,
        secrets=server_secrets,
        channel_id=created.channel_id,
        actor=ACTOR,
        now=T0 + MINUTE,
    )
    assert reset.revoked_key_ids == tuple(sorted((created.key_id, rotation.key_id)))
    assert reset.channel_name == "main"
    now = T0 + 2 * MINUTE
    assert await _reason(session, server_secrets, created.key, now) is RefusalReason.REVOKED
    assert await _reason(session, server_secrets, rotation.key, now) is RefusalReason.REVOKED
    assert await _reason(session, server_secrets, reset.key, now) is None
    [entry] = await audit_rows(session, "key.reset")
    assert entry.key_id == reset.key_id
    assert entry.details == {"revoked_key_ids": list(reset.revoked_key_ids)}


async def test_reset_leaves_an_expired_key_expired(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    rotation = await rotate_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR, now=T0
    )
    reset = await reset_key(
        session,
        secrets=server_secrets,
        channel_id=created.channel_id,
        actor=ACTOR,
        now=T0 + 20 * MINUTE,
    )
    assert reset.revoked_key_ids == (rotation.key_id,)  # only what was still active
    reason = await _reason(session, server_secrets, created.key, T0 + 21 * MINUTE)
    assert reason is RefusalReason.EXPIRED


async def test_revoke_without_replacement(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    rotation = await rotate_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR, now=T0
    )
    revoked = await revoke_keys(
        session, channel_id=created.channel_id, actor=ACTOR, now=T0 + MINUTE
    )
    assert revoked == tuple(sorted((created.key_id, rotation.key_id)))
    for key in (created.key, rotation.key):
        reason = await _reason(session, server_secrets, key, T0 + 2 * MINUTE)
        assert reason is RefusalReason.REVOKED
    [summary] = await list_channels(session, now=T0 + 2 * MINUTE)
    assert (summary.key_id, summary.rotating_key_ids) == (None, ())
    entries = await audit_rows(session, "key.revoked")
    assert sorted(e.key_id or "" for e in entries) == sorted(revoked)
    with pytest.raises(NoActiveKey, match="'main'") as caught:
        await reveal_key(
            session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
        )
    assert caught.value.status == 409
    assert await key_hint(session, secrets=server_secrets, channel_id=created.channel_id) is None
    # Nothing left: a second revoke changes nothing and records nothing.
    assert await revoke_keys(session, channel_id=created.channel_id, actor=ACTOR) == ()
    assert len(await audit_rows(session, "key.revoked")) == 2
    # A rotation after a revoke simply issues a key.
    issued = await rotate_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
    )
    assert issued.previous_key_id is None
    assert issued.previous_expires_at is None


async def test_reveal_is_audited_and_commits(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    shown = await reveal_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
    )
    assert shown == created.key
    assert not session.in_transaction()
    [entry] = await audit_rows(session, "key.revealed")
    assert (entry.key_id, entry.channel_id, entry.actor) == (
        created.key_id,
        created.channel_id,
        "admin@example.com",
    )


async def test_a_failed_reveal_records_nothing(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    other = ServerSecrets(hmac_key=server_secrets.hmac_key, encryption_key=bytes(32))
    with pytest.raises(KeyDecryptionError):
        await reveal_key(session, secrets=other, channel_id=created.channel_id, actor=ACTOR)
    assert await audit_rows(session, "key.revealed") == []


async def test_reveal_during_overlap_shows_the_new_key(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    rotation = await rotate_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
    )
    shown = await reveal_key(
        session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
    )
    assert shown == rotation.key


async def test_key_hint_masks_the_current_key(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await _channel(session, server_secrets)
    hint = await key_hint(session, secrets=server_secrets, channel_id=created.channel_id)
    assert hint == f"ssk_{created.key_id}_…{created.key[-4:]}"
    assert created.key.split("_")[2][:-4] not in (hint or "")
    assert await audit_rows(session, "key.revealed") == []  # a hint is not a reveal
    other = ServerSecrets(hmac_key=server_secrets.hmac_key, encryption_key=bytes(32))
    degraded = await key_hint(session, secrets=other, channel_id=created.channel_id)
    assert degraded == f"ssk_{created.key_id}_…"
    with pytest.raises(ChannelNotFound):
        await key_hint(session, secrets=server_secrets, channel_id=created.channel_id + 1)


async def test_a_disabled_owners_keys_are_refused_as_revoked(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    owner = await add_user(session, "streamer@example.com")
    created = await create_channel(
        session, secrets=server_secrets, name="main", actor=ACTOR, owner_id=owner
    )
    assert await _reason(session, server_secrets, created.key, T0) is None
    async with session.begin():
        await session.execute(update(User).where(User.id == owner).values(disabled_at=T0))
    assert await _reason(session, server_secrets, created.key, T0) is RefusalReason.REVOKED
    async with session.begin():
        await session.execute(update(User).where(User.id == owner).values(disabled_at=None))
    assert await _reason(session, server_secrets, created.key, T0) is None


async def test_concurrent_rotations_leave_one_current_key(
    sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> None:
    async with sessions() as session:
        created = await _channel(session, server_secrets)

    async def rotate() -> str:
        async with sessions() as session:
            rotation = await rotate_key(
                session, secrets=server_secrets, channel_id=created.channel_id, actor=ACTOR
            )
            return rotation.key_id

    await asyncio.gather(*(rotate() for _ in range(8)))
    async with sessions() as session, session.begin():
        rows = (
            await session.execute(
                select(StreamKey.key_id, StreamKey.revoked_at, StreamKey.expires_at)
            )
        ).all()
    current = [r for r in rows if r.revoked_at is None and r.expires_at is None]
    overlapping = [r for r in rows if r.revoked_at is None and r.expires_at is not None]
    assert len(rows) == 9
    assert len(current) == 1
    assert len(overlapping) == 1
