"""Rotating the server secrets end to end: every issued key keeps working throughout."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync import audit
from stream_sync.credentials import (
    KeyDecryptionError,
    RefusalReason,
    ServerSecrets,
    create_channel,
    drop_previous_secrets,
    encrypt_key,
    generate_key,
    key_hash,
    load_or_create,
    rehash_all_keys,
    reset_key,
    reveal_key,
    rotate_key,
    rotate_server_secrets,
    verify_key,
)
from stream_sync.db import StreamKey, utcnow
from tests.unit.credentials.users import audit_rows

ACTOR = audit.Actor.cli()


async def _reason(session: AsyncSession, secrets: ServerSecrets, key: str) -> RefusalReason | None:
    return (await verify_key(session, secrets=secrets, presented=key)).reason


async def _stored(session: AsyncSession) -> dict[str, tuple[bytes, bytes]]:
    async with session.begin():
        rows = (
            await session.execute(
                select(StreamKey.key_id, StreamKey.key_hash, StreamKey.ciphertext)
            )
        ).all()
    return {row.key_id: (row.key_hash, row.ciphertext) for row in rows}


async def test_rotate_rehash_drop_keeps_every_key(session: AsyncSession, tmp_path: Path) -> None:
    old = load_or_create(tmp_path, environ={})
    main = await create_channel(session, secrets=old, name="main", actor=ACTOR)
    other = await create_channel(session, secrets=old, name="other", actor=ACTOR)
    rotation = await rotate_key(session, secrets=old, channel_id=other.channel_id, actor=ACTOR)
    gone = await create_channel(session, secrets=old, name="gone", actor=ACTOR)
    fresh = await reset_key(session, secrets=old, channel_id=gone.channel_id, actor=ACTOR)
    working = {main.key, other.key, rotation.key, fresh.key}

    # 1. New files; the old generation stays readable.
    new = rotate_server_secrets(tmp_path, environ={})
    assert new.previous == (ServerSecrets(old.hmac_key, old.encryption_key),)
    for key in working:
        assert await _reason(session, new, key) is None
    assert await _reason(session, new, gone.key) is RefusalReason.REVOKED
    assert await reveal_key(session, secrets=new, channel_id=main.channel_id, actor=ACTOR) == (
        main.key
    )
    # Keys issued from now on use only the new generation.
    issued = await create_channel(session, secrets=new, name="issued", actor=ACTOR)
    current_only = ServerSecrets(new.hmac_key, new.encryption_key)
    assert await _reason(session, current_only, issued.key) is None
    assert await _reason(session, current_only, main.key) is RefusalReason.UNKNOWN
    working.add(issued.key)

    # 3. Re-key every row; safe to repeat.
    before = await _stored(session)
    assert await rehash_all_keys(session, secrets=new, actor=ACTOR) == 6
    after = await _stored(session)
    assert after[issued.key_id][0] == before[issued.key_id][0]  # same secret, same HMAC
    assert all(after[k][1] != before[k][1] for k in before)  # fresh nonce everywhere
    assert await rehash_all_keys(session, secrets=new, actor=ACTOR) == 6
    assert [e.details for e in await audit_rows(session, "secrets.rotated")] == [
        {"rehashed": 6, "generations": 2},
        {"rehashed": 6, "generations": 2},
    ]
    # Between steps 3 and 4 the current generation alone already suffices.
    for key in working:
        assert await _reason(session, current_only, key) is None

    # 4. Drop the old generation: nothing depends on it any more.
    assert drop_previous_secrets(tmp_path, environ={}) == 2
    reloaded = load_or_create(tmp_path, environ={})
    assert reloaded == current_only
    for key in working:
        assert await _reason(session, reloaded, key) is None
    assert await _reason(session, reloaded, gone.key) is RefusalReason.REVOKED  # not "unknown"
    assert await reveal_key(
        session, secrets=reloaded, channel_id=other.channel_id, actor=ACTOR
    ) == (rotation.key)


async def test_rehash_refuses_while_an_active_key_cannot_be_decrypted(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    # A key whose encryption key was lost long ago: it still verifies (the HMAC
    # secret is known), so dropping that HMAC secret later would break it.
    lost = ServerSecrets(server_secrets.hmac_key, os.urandom(32))
    stuck = await create_channel(session, secrets=lost, name="stuck", actor=ACTOR)
    new = ServerSecrets(os.urandom(32), os.urandom(32), previous=(server_secrets,))
    before = await _stored(session)
    with pytest.raises(KeyDecryptionError, match=stuck.key_id) as caught:
        await rehash_all_keys(session, secrets=new, actor=ACTOR)
    assert created.key_id not in str(caught.value)
    assert await _stored(session) == before  # all or nothing
    assert await audit_rows(session, "secrets.rotated") == []
    # Once that key is reset, the rehash goes through.
    await reset_key(session, secrets=new, channel_id=stuck.channel_id, actor=ACTOR)
    assert await rehash_all_keys(session, secrets=new, actor=ACTOR) == 2
    assert await _reason(session, ServerSecrets(new.hmac_key, new.encryption_key), created.key) is (
        None
    )


async def test_rehash_never_revives_a_key_whose_hmac_secret_is_lost(
    session: AsyncSession, server_secrets: ServerSecrets
) -> None:
    created = await create_channel(session, secrets=server_secrets, name="main", actor=ACTOR)
    orphan = generate_key()
    async with session.begin():
        session.add(
            StreamKey(
                key_id=orphan.key_id,
                channel_id=created.channel_id,
                key_hash=key_hash(os.urandom(32), orphan.key),  # HMAC secret long gone
                ciphertext=encrypt_key(
                    server_secrets.encryption_key, key_id=orphan.key_id, key=orphan.key
                ),
                expires_at=utcnow() + timedelta(hours=1),  # would be active if it matched
            )
        )
    assert await _reason(session, server_secrets, orphan.key) is RefusalReason.UNKNOWN
    assert await rehash_all_keys(session, secrets=server_secrets, actor=ACTOR) == 1
    assert await _reason(session, server_secrets, orphan.key) is RefusalReason.UNKNOWN
