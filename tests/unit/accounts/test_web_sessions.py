from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync.accounts import (
    AccountDisabled,
    UserInfo,
    UserNotFound,
    create_session,
    disable_user,
    end_session,
    end_user_sessions,
    purge_expired_sessions,
    resolve_session,
    set_password,
)
from stream_sync.audit import Actor
from stream_sync.db.models import AuthSession, User, utcnow

from .conftest import audit_rows, make_user


async def _row(sessions: async_sessionmaker[AsyncSession], session_id: int) -> AuthSession:
    async with sessions() as fresh, fresh.begin():
        row = await fresh.get(AuthSession, session_id)
        assert row is not None
        return row


async def test_create_and_resolve(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    token, info = await create_session(session, user_id=streamer.id, source_address="192.0.2.4")
    assert len(token) == 43
    assert len(info.csrf_token) == 43
    assert info.csrf_token != token
    assert info.user == streamer
    row = await _row(sessions, info.session_id)
    assert row.token_hash == hashlib.sha256(token.encode()).digest()
    assert row.source_address == "192.0.2.4"
    assert timedelta(days=7) - (row.expires_at - row.created_at) < timedelta(seconds=1)
    async with sessions() as fresh, fresh.begin():
        stored = (await fresh.execute(select(AuthSession.__table__))).all()
    assert token not in repr(stored)

    resolved = await resolve_session(session, token=token)
    assert resolved == info
    other, _ = await create_session(session, user_id=streamer.id, source_address=None)
    assert other != token


async def test_create_refuses_unknown_and_disabled_users(
    session: AsyncSession, admin: UserInfo, streamer: UserInfo
) -> None:
    with pytest.raises(UserNotFound):
        await create_session(session, user_id=9999, source_address=None)
    await disable_user(session, user_id=streamer.id, actor=Actor.cli())
    with pytest.raises(AccountDisabled):
        await create_session(session, user_id=streamer.id, source_address=None)


@pytest.mark.parametrize(
    "token",
    ["", "short", "A" * 42, "A" * 44, "A" * 42 + "=", "A" * 42 + "\n", "sst_" + "A" * 39],
)
async def test_malformed_tokens_resolve_to_none(
    session: AsyncSession, streamer: UserInfo, token: str
) -> None:
    await create_session(session, user_id=streamer.id, source_address=None)
    assert await resolve_session(session, token=token) is None


async def test_unknown_token(session: AsyncSession, streamer: UserInfo) -> None:
    token, _ = await create_session(session, user_id=streamer.id, source_address=None)
    wrong = ("B" if token[0] != "B" else "C") + token[1:]
    assert await resolve_session(session, token=wrong) is None


async def test_expiry_and_idle_timeout(session: AsyncSession, streamer: UserInfo) -> None:
    start = utcnow()
    token, _ = await create_session(
        session, user_id=streamer.id, source_address=None, ttl=timedelta(hours=2), now=start
    )
    at = start + timedelta(hours=2) - timedelta(seconds=1)
    assert await resolve_session(session, token=token, now=at) is not None
    assert await resolve_session(session, token=token, now=start + timedelta(hours=2)) is None

    token, _ = await create_session(
        session, user_id=streamer.id, source_address=None, ttl=timedelta(days=1), now=start
    )
    idle = timedelta(minutes=30)
    # Each use within the idle timeout keeps it alive...
    for minutes in (20, 40, 60):
        at = start + timedelta(minutes=minutes)
        assert await resolve_session(session, token=token, now=at, idle_timeout=idle) is not None
    # ...and 30 minutes without one ends it.
    at = start + timedelta(minutes=90)
    assert await resolve_session(session, token=token, now=at, idle_timeout=idle) is None


async def test_last_seen_is_written_at_most_once_a_minute(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    start = utcnow()
    token, info = await create_session(session, user_id=streamer.id, source_address=None, now=start)
    await resolve_session(session, token=token, now=start + timedelta(seconds=59))
    assert (await _row(sessions, info.session_id)).last_seen_at == start
    later = start + timedelta(seconds=60)
    await resolve_session(session, token=token, now=later)
    assert (await _row(sessions, info.session_id)).last_seen_at == later
    await resolve_session(session, token=token, now=later + timedelta(seconds=30))
    assert (await _row(sessions, info.session_id)).last_seen_at == later


async def test_disabled_user_sessions_stop_resolving(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    admin: UserInfo,
    streamer: UserInfo,
) -> None:
    token, _ = await create_session(session, user_id=streamer.id, source_address=None)
    # Even if a session row survived (disabled directly in the database), it does not resolve.
    async with sessions() as fresh, fresh.begin():
        user = await fresh.get(User, streamer.id)
        assert user is not None
        user.disabled_at = utcnow()
    assert await resolve_session(session, token=token) is None


async def test_session_created_before_a_password_change_is_refused(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    token, _ = await create_session(session, user_id=streamer.id, source_address=None)
    # The password changed (say, by another node) and the session row was not deleted.
    async with sessions() as fresh, fresh.begin():
        user = await fresh.get(User, streamer.id)
        assert user is not None
        user.password_changed_at = utcnow()
    assert await resolve_session(session, token=token) is None
    fresh_token, _ = await create_session(session, user_id=streamer.id, source_address=None)
    assert await resolve_session(session, token=fresh_token) is not None


async def test_end_session(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    token, _ = await create_session(session, user_id=streamer.id, source_address=None)
    other, _ = await create_session(session, user_id=streamer.id, source_address=None)
    await end_session(session, token=token, source_address="192.0.2.5")
    assert await resolve_session(session, token=token) is None
    assert await resolve_session(session, token=other) is not None
    entry = (await audit_rows(sessions))[-1]
    assert (entry.action, entry.actor, entry.actor_user_id, entry.source_address) == (
        "logout",
        streamer.email,
        streamer.id,
        "192.0.2.5",
    )
    count = len(await audit_rows(sessions))
    await end_session(session, token=token)  # already ended: nothing, no audit
    await end_session(session, token="junk")
    assert len(await audit_rows(sessions)) == count


async def test_end_user_sessions(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    admin: UserInfo,
    streamer: UserInfo,
) -> None:
    tokens = [
        (await create_session(session, user_id=streamer.id, source_address=None))[0]
        for _ in range(3)
    ]
    admins, _ = await create_session(session, user_id=admin.id, source_address=None)
    ended = await end_user_sessions(session, user_id=streamer.id, except_token=tokens[0])
    assert ended == 2
    assert await resolve_session(session, token=tokens[0]) is not None
    assert [await resolve_session(session, token=t) for t in tokens[1:]] == [None, None]
    count = len(await audit_rows(sessions))
    assert await end_user_sessions(session, user_id=streamer.id, actor=Actor.cli()) == 1
    assert await resolve_session(session, token=tokens[0]) is None
    assert await resolve_session(session, token=admins) is not None
    entry = (await audit_rows(sessions))[-1]
    assert len(await audit_rows(sessions)) == count + 1
    assert (entry.action, entry.details) == (
        "logout",
        {"user_id": streamer.id, "sessions_ended": 1},
    )


async def test_set_password_ends_sessions_of_that_user_only(
    session: AsyncSession, admin: UserInfo, streamer: UserInfo
) -> None:
    mine, _ = await create_session(session, user_id=streamer.id, source_address=None)
    theirs, _ = await create_session(session, user_id=admin.id, source_address=None)
    await set_password(
        session, user_id=streamer.id, new_password="brand new passphrase", actor=Actor.cli()
    )
    assert await resolve_session(session, token=mine) is None
    assert await resolve_session(session, token=theirs) is not None


async def test_purge_expired_sessions(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    start = utcnow()
    await create_session(
        session, user_id=streamer.id, source_address=None, ttl=timedelta(hours=1), now=start
    )
    long, info = await create_session(
        session, user_id=streamer.id, source_address=None, ttl=timedelta(days=30), now=start
    )
    purged = await purge_expired_sessions(
        session, now=start + timedelta(hours=2), idle_timeout=timedelta(days=7)
    )
    assert purged == 1
    assert await resolve_session(session, token=long, now=start + timedelta(hours=2)) is not None
    async with sessions() as fresh, fresh.begin():
        assert (await fresh.scalars(select(AuthSession.id))).all() == [info.session_id]
    assert await purge_expired_sessions(session, now=start + timedelta(days=8)) == 1


async def test_deleted_user_sessions_go_with_the_user(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    admin: UserInfo,
) -> None:
    from stream_sync.accounts import delete_user

    user = await make_user(session, "leaving@example.com")
    token, _ = await create_session(session, user_id=user.id, source_address=None)
    await delete_user(session, user_id=user.id, actor=Actor.cli())
    assert await resolve_session(session, token=token) is None
    async with sessions() as fresh, fresh.begin():
        assert (await fresh.scalars(select(AuthSession.id))).all() == []
