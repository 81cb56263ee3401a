from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Literal

import argon2
import pytest
from argon2 import PasswordHasher, Type
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync.accounts import (
    AccountDisabled,
    InvalidCredentials,
    InvalidEmail,
    InvalidResetToken,
    LastAdmin,
    LoginThrottle,
    TooManyAttempts,
    UserExists,
    UserInfo,
    UserNotFound,
    WeakPassword,
    authenticate,
    change_password,
    complete_password_reset,
    count_admins,
    create_session,
    delete_user,
    disable_user,
    enable_user,
    find_user,
    get_user,
    list_users,
    normalize_email,
    passwords,
    resolve_session,
    set_password,
    set_role,
    start_password_reset,
)
from stream_sync.audit import Actor
from stream_sync.db.models import AuditEntry, AuthSession, Role, User, utcnow

from .conftest import PASSWORD, audit_dump, audit_rows, make_user

NEW_PASSWORD = "a much better passphrase"


# --- emails -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Someone@Example.COM", "someone@example.com"),
        ("  someone@example.com\n", "someone@example.com"),
        ("first.last+tag@mail.example.co.uk", "first.last+tag@mail.example.co.uk"),
        ("x@y.io", "x@y.io"),
    ],
)
def test_normalize_email(given: str, stored: str) -> None:
    assert normalize_email(given) == stored


@pytest.mark.parametrize(
    "given",
    [
        "",
        "someone",
        "someone@",
        "@example.com",
        "someone@example",
        "some one@example.com",
        "someone@@example.com",
        "someone@example..com",
        "someone@example.c",
        "someone@exa\x00mple.com",
        "a" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
    ],
)
def test_invalid_emails(given: str) -> None:
    with pytest.raises(InvalidEmail) as caught:
        normalize_email(given)
    assert caught.value.status == 422
    # One fixed message: the input (maybe a password typed in the wrong field) is not echoed.
    assert caught.value.message == "enter an email address such as name@example.com"


# --- creating and finding -----------------------------------------------------------


async def test_create_user(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession]
) -> None:
    before = utcnow()
    user = await make_user(session, "  New.User@Example.com ", Role.ADMIN)
    assert user.email == "new.user@example.com"
    assert user.role is Role.ADMIN
    assert not user.disabled
    assert user.created_at >= before
    assert user.password_changed_at == user.created_at
    async with sessions() as fresh, fresh.begin():
        row = await fresh.get(User, user.id)
        assert row is not None
        assert row.password_hash.startswith("$argon2id$")
        assert PASSWORD not in row.password_hash
    (entry,) = await audit_rows(sessions)
    assert entry.action == "user.created"
    assert entry.actor == "cli"
    assert entry.details == {"user_id": user.id, "email": "new.user@example.com", "role": "admin"}
    assert PASSWORD not in await audit_dump(sessions)


async def test_duplicate_email_regardless_of_case(session: AsyncSession) -> None:
    await make_user(session, "someone@example.com")
    with pytest.raises(UserExists) as caught:
        await make_user(session, "SomeOne@EXAMPLE.com")
    assert caught.value.status == 409
    assert len(await list_users(session)) == 1


async def test_concurrent_creates_of_one_email(sessions: async_sessionmaker[AsyncSession]) -> None:
    async def create() -> UserInfo:
        async with sessions() as session:
            return await make_user(session, "race@example.com")

    results = await asyncio.gather(create(), create(), return_exceptions=True)
    assert sum(isinstance(result, UserInfo) for result in results) == 1
    failures = [result for result in results if not isinstance(result, UserInfo)]
    # PostgreSQL reports the unique violation; SQLite may also refuse the second writer.
    assert all(isinstance(failure, Exception) for failure in failures)
    async with sessions() as session:
        assert [user.email for user in await list_users(session)] == ["race@example.com"]


async def test_create_refuses_weak_password_and_bad_email(session: AsyncSession) -> None:
    with pytest.raises(WeakPassword):
        await make_user(session, "someone@example.com", password="short")
    with pytest.raises(InvalidEmail):
        await make_user(session, "not an email")
    assert await list_users(session) == []


async def test_get_find_list(session: AsyncSession, admin: UserInfo, streamer: UserInfo) -> None:
    assert await get_user(session, user_id=streamer.id) == streamer
    assert await find_user(session, email="STREAMER@example.com") == streamer
    assert [user.email for user in await list_users(session)] == [admin.email, streamer.email]
    with pytest.raises(UserNotFound):
        await get_user(session, user_id=streamer.id + 100)
    with pytest.raises(UserNotFound):
        await find_user(session, email="nobody@example.com")


# --- signing in ---------------------------------------------------------------------


async def test_authenticate_success_is_audited(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    user = await authenticate(
        session, email=" Streamer@Example.com", password=PASSWORD, source_address="192.0.2.7"
    )
    assert user == streamer
    entry = (await audit_rows(sessions))[-1]
    assert entry.action == "login.succeeded"
    assert (entry.actor, entry.actor_user_id, entry.source_address) == (
        streamer.email,
        streamer.id,
        "192.0.2.7",
    )


@pytest.mark.parametrize(
    ("email", "password", "label", "reason"),
    [
        ("streamer@example.com", "wrong password here", "streamer@example.com", "wrong_password"),
        ("nobody@example.com", PASSWORD, "nobody@example.com", "unknown_user"),
        ("Nobody@Example.com", "zq-unusual-guess", "nobody@example.com", "unknown_user"),
        ("my secret password", PASSWORD, "unknown", "invalid_email"),
        ("streamer@example.com", "p" * 5000, "streamer@example.com", "wrong_password"),
    ],
)
async def test_authenticate_failures_look_alike_and_are_audited(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    streamer: UserInfo,
    email: str,
    password: str,
    label: str,
    reason: str,
) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        await authenticate(session, email=email, password=password, source_address="192.0.2.8")
    assert caught.value.message == "wrong email or password"
    assert caught.value.status == 401
    entry = (await audit_rows(sessions))[-1]
    assert entry.action == "login.failed"
    assert (entry.actor, entry.actor_user_id, entry.source_address) == (label, None, "192.0.2.8")
    assert entry.details == {"reason": reason}
    dump = await audit_dump(sessions)
    assert password not in dump
    assert "my secret password" not in dump


async def test_disabled_user_fails_like_a_wrong_password(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    admin: UserInfo,
    streamer: UserInfo,
) -> None:
    await disable_user(session, user_id=streamer.id, actor=Actor.cli())
    with pytest.raises(InvalidCredentials) as caught:
        await authenticate(session, email=streamer.email, password=PASSWORD, source_address=None)
    assert caught.value.message == "wrong email or password"
    assert (await audit_rows(sessions))[-1].details == {"reason": "disabled"}


async def test_unknown_email_spends_a_verification(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            calls.append(str(hash))
            return super().verify(hash, password)

    monkeypatch.setattr(passwords, "_hasher", Counting(time_cost=1, memory_cost=8, parallelism=1))
    with pytest.raises(InvalidCredentials):
        await authenticate(
            session, email="nobody@example.com", password=PASSWORD, source_address=None
        )
    assert len(calls) == 1


async def test_login_rehashes_when_parameters_change(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    streamer: UserInfo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def stored_hash() -> str:
        async with sessions() as fresh, fresh.begin():
            value = await fresh.scalar(select(User.password_hash).where(User.id == streamer.id))
            assert value is not None
            return value

    old = await stored_hash()
    assert argon2.extract_parameters(old).time_cost == 1
    stronger = PasswordHasher(time_cost=3, memory_cost=8, parallelism=1, type=Type.ID)
    monkeypatch.setattr(passwords, "_hasher", stronger)
    await authenticate(session, email=streamer.email, password=PASSWORD, source_address=None)
    new = await stored_hash()
    assert new != old
    assert argon2.extract_parameters(new).time_cost == 3
    await authenticate(session, email=streamer.email, password=PASSWORD, source_address=None)
    assert await stored_hash() == new  # no rehash when already current


async def test_throttled_login_touches_nothing(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    clock = [0.0]
    throttle = LoginThrottle(now=lambda: clock[0])
    for _ in range(5):
        with pytest.raises(InvalidCredentials):
            await authenticate(
                session,
                email=streamer.email,
                password="not the password",
                source_address="192.0.2.9",
                throttle=throttle,
            )
    audited = len(await audit_rows(sessions))
    with pytest.raises(TooManyAttempts) as caught:
        await authenticate(
            session,
            email="STREAMER@example.com",
            password=PASSWORD,
            source_address="192.0.2.10",
            throttle=throttle,
        )
    assert caught.value.retry_after == pytest.approx(30.0)
    assert caught.value.status == 429
    assert len(await audit_rows(sessions)) == audited  # no database write
    clock[0] = 31.0
    await authenticate(
        session, email=streamer.email, password=PASSWORD, source_address=None, throttle=throttle
    )
    assert throttle.check(streamer.email, None) == 0.0


# --- passwords ----------------------------------------------------------------------


async def _session_count(sessions: async_sessionmaker[AsyncSession], user_id: int) -> int:
    async with sessions() as fresh, fresh.begin():
        count = await fresh.scalar(
            select(func.count()).select_from(AuthSession).where(AuthSession.user_id == user_id)
        )
        return count or 0


async def test_change_password_keeps_only_the_current_session(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    streamer: UserInfo,
    admin: UserInfo,
) -> None:
    current, _ = await create_session(session, user_id=streamer.id, source_address=None)
    other, _ = await create_session(session, user_id=streamer.id, source_address=None)
    admins, _ = await create_session(session, user_id=admin.id, source_address=None)
    actor = Actor(streamer.email, streamer.id)
    await change_password(
        session,
        user_id=streamer.id,
        current_password=PASSWORD,
        new_password=NEW_PASSWORD,
        actor=actor,
        keep_session_token=current,
    )
    kept = await resolve_session(session, token=current)
    assert kept is not None
    assert kept.user.id == streamer.id
    assert kept.user.password_changed_at > streamer.password_changed_at
    assert await resolve_session(session, token=other) is None
    assert await resolve_session(session, token=admins) is not None
    assert await _session_count(sessions, streamer.id) == 1
    with pytest.raises(InvalidCredentials):
        await authenticate(session, email=streamer.email, password=PASSWORD, source_address=None)
    await authenticate(session, email=streamer.email, password=NEW_PASSWORD, source_address=None)
    changed = [e for e in await audit_rows(sessions) if e.action == "password.changed"]
    assert len(changed) == 1
    assert changed[0].details == {"user_id": streamer.id, "sessions_ended": 1}
    dump = await audit_dump(sessions)
    assert PASSWORD not in dump
    assert NEW_PASSWORD not in dump


async def test_change_password_without_a_kept_session_ends_all(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    token, _ = await create_session(session, user_id=streamer.id, source_address=None)
    reset = await start_password_reset(session, user_id=streamer.id, actor=Actor.cli())
    await change_password(
        session,
        user_id=streamer.id,
        current_password=PASSWORD,
        new_password=NEW_PASSWORD,
        actor=Actor.cli(),
    )
    assert await resolve_session(session, token=token) is None
    assert await _session_count(sessions, streamer.id) == 0
    with pytest.raises(InvalidResetToken):  # the pending reset went with the old password
        await complete_password_reset(
            session, token=reset, new_password="yet another passphrase", source_address=None
        )


async def test_change_password_checks_current_and_policy(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    token, _ = await create_session(session, user_id=streamer.id, source_address=None)
    with pytest.raises(InvalidCredentials) as caught:
        await change_password(
            session,
            user_id=streamer.id,
            current_password="not my password",
            new_password=NEW_PASSWORD,
            actor=Actor.cli(),
        )
    assert "not my password" not in caught.value.message
    with pytest.raises(WeakPassword):
        await change_password(
            session,
            user_id=streamer.id,
            current_password=PASSWORD,
            new_password=streamer.email,
            actor=Actor.cli(),
        )
    # Nothing changed: the old password works and the session lives.
    await authenticate(session, email=streamer.email, password=PASSWORD, source_address=None)
    assert await resolve_session(session, token=token) is not None
    assert not [e for e in await audit_rows(sessions) if e.action == "password.changed"]


async def test_wrong_current_passwords_are_throttled(
    session: AsyncSession, streamer: UserInfo
) -> None:
    throttle = LoginThrottle(now=lambda: 0.0)
    actor = Actor(streamer.email, streamer.id, "192.0.2.11")
    for _ in range(5):
        with pytest.raises(InvalidCredentials):
            await change_password(
                session,
                user_id=streamer.id,
                current_password="a wrong guess here",
                new_password=NEW_PASSWORD,
                actor=actor,
                throttle=throttle,
            )
    with pytest.raises(TooManyAttempts):
        await change_password(
            session,
            user_id=streamer.id,
            current_password=PASSWORD,
            new_password=NEW_PASSWORD,
            actor=actor,
            throttle=throttle,
        )
    assert throttle.check(streamer.email, None) == 30


async def test_set_password_ends_every_session(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    admin: UserInfo,
    streamer: UserInfo,
) -> None:
    token, _ = await create_session(session, user_id=streamer.id, source_address=None)
    reset = await start_password_reset(session, user_id=streamer.id, actor=Actor.cli())
    await set_password(session, user_id=streamer.id, new_password=NEW_PASSWORD, actor=Actor.cli())
    assert await resolve_session(session, token=token) is None
    await authenticate(session, email=streamer.email, password=NEW_PASSWORD, source_address=None)
    with pytest.raises(InvalidResetToken):  # a pending reset is spent by the new password
        await complete_password_reset(
            session, token=reset, new_password="yet another passphrase", source_address=None
        )
    with pytest.raises(UserNotFound):
        await set_password(session, user_id=9999, new_password=NEW_PASSWORD, actor=Actor.cli())
    entry = [e for e in await audit_rows(sessions) if e.action == "password.changed"][-1]
    assert entry.details == {"user_id": streamer.id, "sessions_ended": 1, "by_admin": True}


# --- password reset -----------------------------------------------------------------


async def test_reset_flow(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    old_session, _ = await create_session(session, user_id=streamer.id, source_address=None)
    admin_actor = Actor("boss@example.com", None, "192.0.2.1")
    token = await start_password_reset(session, user_id=streamer.id, actor=admin_actor)
    assert token.startswith("ssr_")
    assert len(token) == 47
    async with sessions() as fresh, fresh.begin():
        row = await fresh.get(User, streamer.id)
        assert row is not None
        assert row.reset_token_hash == hashlib.sha256(token.encode()).digest()
        assert row.reset_expires_at is not None
    user = await complete_password_reset(
        session, token=token, new_password=NEW_PASSWORD, source_address="192.0.2.2"
    )
    assert user.id == streamer.id
    assert user.password_changed_at > streamer.password_changed_at
    await authenticate(session, email=streamer.email, password=NEW_PASSWORD, source_address=None)
    assert await resolve_session(session, token=old_session) is None
    # Single use.
    with pytest.raises(InvalidResetToken):
        await complete_password_reset(
            session, token=token, new_password="another fine passphrase", source_address=None
        )
    actions = [(e.action, e.actor, e.source_address) for e in await audit_rows(sessions)]
    assert ("password.reset_started", "boss@example.com", "192.0.2.1") in actions
    assert ("password.reset_completed", streamer.email, "192.0.2.2") in actions
    dump = await audit_dump(sessions)
    assert token not in dump
    assert token[4:] not in dump
    assert NEW_PASSWORD not in dump


async def test_reset_token_expires(session: AsyncSession, streamer: UserInfo) -> None:
    start = utcnow()
    token = await start_password_reset(
        session, user_id=streamer.id, actor=Actor.cli(), ttl=timedelta(hours=1), now=start
    )
    with pytest.raises(InvalidResetToken):
        await complete_password_reset(
            session,
            token=token,
            new_password=NEW_PASSWORD,
            source_address=None,
            now=start + timedelta(hours=1),
        )
    user = await complete_password_reset(
        session,
        token=token,
        new_password=NEW_PASSWORD,
        source_address=None,
        now=start + timedelta(minutes=59),
    )
    assert user.id == streamer.id


@pytest.mark.parametrize(
    "token",
    ["", "ssr_", "ssr_" + "A" * 42, "ssr_" + "A" * 44, "ssr_" + "A" * 42 + "-", "sst_" + "A" * 43],
)
async def test_malformed_reset_tokens(
    session: AsyncSession, streamer: UserInfo, token: str
) -> None:
    await start_password_reset(session, user_id=streamer.id, actor=Actor.cli())
    with pytest.raises(InvalidResetToken) as caught:
        await complete_password_reset(
            session, token=token, new_password=NEW_PASSWORD, source_address=None
        )
    assert caught.value.status == 400
    if token:
        assert token not in caught.value.message


async def test_wrong_and_replaced_reset_tokens(session: AsyncSession, streamer: UserInfo) -> None:
    first = await start_password_reset(session, user_id=streamer.id, actor=Actor.cli())
    second = await start_password_reset(session, user_id=streamer.id, actor=Actor.cli())
    assert first != second
    wrong = "ssr_" + ("B" if second[4] != "B" else "C") + second[5:]
    for token in (first, wrong):
        with pytest.raises(InvalidResetToken):
            await complete_password_reset(
                session, token=token, new_password=NEW_PASSWORD, source_address=None
            )
    await complete_password_reset(
        session, token=second, new_password=NEW_PASSWORD, source_address=None
    )


async def test_weak_password_does_not_spend_the_token(
    session: AsyncSession, streamer: UserInfo
) -> None:
    token = await start_password_reset(session, user_id=streamer.id, actor=Actor.cli())
    with pytest.raises(WeakPassword):
        await complete_password_reset(
            session, token=token, new_password="short", source_address=None
        )
    await complete_password_reset(
        session, token=token, new_password=NEW_PASSWORD, source_address=None
    )


async def test_reset_and_disabled_users(
    session: AsyncSession, admin: UserInfo, streamer: UserInfo
) -> None:
    token = await start_password_reset(session, user_id=streamer.id, actor=Actor.cli())
    await disable_user(session, user_id=streamer.id, actor=Actor.cli())
    with pytest.raises(InvalidResetToken):
        await complete_password_reset(
            session, token=token, new_password=NEW_PASSWORD, source_address=None
        )
    with pytest.raises(AccountDisabled) as caught:
        await start_password_reset(session, user_id=streamer.id, actor=Actor.cli())
    assert caught.value.status == 403
    await enable_user(session, user_id=streamer.id, actor=Actor.cli())
    # Disabling cleared the pending reset: it does not come back with the account.
    with pytest.raises(InvalidResetToken):
        await complete_password_reset(
            session, token=token, new_password=NEW_PASSWORD, source_address=None
        )
    with pytest.raises(UserNotFound):
        await start_password_reset(session, user_id=9999, actor=Actor.cli())


# --- disabling, deleting, roles -----------------------------------------------------


async def test_disable_and_enable(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    admin: UserInfo,
    streamer: UserInfo,
) -> None:
    token, _ = await create_session(session, user_id=streamer.id, source_address=None)
    actor = Actor(admin.email, admin.id, "192.0.2.3")
    disabled = await disable_user(session, user_id=streamer.id, actor=actor)
    assert disabled.disabled
    assert (await get_user(session, user_id=streamer.id)).disabled
    assert await _session_count(sessions, streamer.id) == 0
    assert await resolve_session(session, token=token) is None
    assert (await disable_user(session, user_id=streamer.id, actor=actor)).disabled  # idempotent
    enabled = await enable_user(session, user_id=streamer.id, actor=actor)
    assert not enabled.disabled
    await authenticate(session, email=streamer.email, password=PASSWORD, source_address=None)
    assert await resolve_session(session, token=token) is None  # ended sessions stay ended
    actions = [e.action for e in await audit_rows(sessions) if e.actor == admin.email]
    assert actions == ["user.disabled", "user.enabled"]
    with pytest.raises(UserNotFound):
        await disable_user(session, user_id=9999, actor=actor)


async def test_last_admin_cannot_be_disabled_deleted_or_demoted(
    session: AsyncSession, admin: UserInfo, streamer: UserInfo
) -> None:
    with pytest.raises(LastAdmin) as caught:
        await disable_user(session, user_id=admin.id, actor=Actor.cli())
    assert caught.value.status == 409
    with pytest.raises(LastAdmin):
        await delete_user(session, user_id=admin.id, actor=Actor.cli())
    with pytest.raises(LastAdmin):
        await set_role(session, user_id=admin.id, role=Role.STREAMER, actor=Actor.cli())
    assert await count_admins(session) == 1
    assert not (await get_user(session, user_id=admin.id)).disabled

    # With a second enabled admin, the first can go.
    await set_role(session, user_id=streamer.id, role=Role.ADMIN, actor=Actor.cli())
    assert await count_admins(session) == 2
    demoted = await set_role(session, user_id=admin.id, role=Role.STREAMER, actor=Actor.cli())
    assert demoted.role is Role.STREAMER
    assert await count_admins(session) == 1


async def test_a_disabled_admin_does_not_count(
    session: AsyncSession, admin: UserInfo, streamer: UserInfo
) -> None:
    other = await make_user(session, "second@example.com", Role.ADMIN)
    await disable_user(session, user_id=other.id, actor=Actor.cli())
    assert await count_admins(session) == 1
    with pytest.raises(LastAdmin):
        await disable_user(session, user_id=admin.id, actor=Actor.cli())
    # A disabled admin can be deleted or demoted: it is not the one keeping access.
    await set_role(session, user_id=other.id, role=Role.STREAMER, actor=Actor.cli())
    await delete_user(session, user_id=other.id, actor=Actor.cli())


async def _warm_pool(sessions: async_sessionmaker[AsyncSession], size: int) -> None:
    """Open ``size`` connections at once, so racing tasks do not wait on a connect."""
    barrier = asyncio.Barrier(size)

    async def hold() -> None:
        async with sessions() as session, session.begin():
            await session.execute(select(1))
            await barrier.wait()

    await asyncio.gather(*(hold() for _ in range(size)))


@pytest.mark.parametrize("operation", ["disable", "delete", "demote"])
async def test_admins_removing_each_other_at_once_leave_one(
    sessions: async_sessionmaker[AsyncSession], operation: str
) -> None:
    async with sessions() as session:
        first = await make_user(session, "first@example.com", Role.ADMIN)
        second = await make_user(session, "second@example.com", Role.ADMIN)
    await _warm_pool(sessions, 2)

    async def remove(user_id: int) -> None:
        async with sessions() as session:
            if operation == "disable":
                await disable_user(session, user_id=user_id, actor=Actor.cli())
            elif operation == "delete":
                await delete_user(session, user_id=user_id, actor=Actor.cli())
            else:
                await set_role(session, user_id=user_id, role=Role.STREAMER, actor=Actor.cli())

    results = await asyncio.gather(remove(first.id), remove(second.id), return_exceptions=True)
    assert results.count(None) == 1
    (refused,) = [result for result in results if result is not None]
    assert isinstance(refused, LastAdmin)
    async with sessions() as session:
        assert await count_admins(session) == 1


async def test_delete_user(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    admin: UserInfo,
    streamer: UserInfo,
) -> None:
    await authenticate(session, email=streamer.email, password=PASSWORD, source_address=None)
    token, _ = await create_session(session, user_id=streamer.id, source_address=None)
    await delete_user(session, user_id=streamer.id, actor=Actor(admin.email, admin.id))
    with pytest.raises(UserNotFound):
        await get_user(session, user_id=streamer.id)
    assert await resolve_session(session, token=token) is None
    assert await _session_count(sessions, streamer.id) == 0
    rows = await audit_rows(sessions)
    login = next(e for e in rows if e.action == "login.succeeded")
    assert (login.actor, login.actor_user_id) == (streamer.email, None)  # FK set to NULL
    deleted = rows[-1]
    assert deleted.action == "user.deleted"
    assert deleted.actor_user_id == admin.id
    assert deleted.details == {"user_id": streamer.id, "email": streamer.email, "role": "streamer"}
    with pytest.raises(UserNotFound):
        await delete_user(session, user_id=streamer.id, actor=Actor.cli())


async def test_a_user_can_delete_themselves(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    admin: UserInfo,
    streamer: UserInfo,
) -> None:
    await delete_user(session, user_id=streamer.id, actor=Actor(streamer.email, streamer.id))
    entry = (await audit_rows(sessions))[-1]
    assert (entry.action, entry.actor, entry.actor_user_id) == (
        "user.deleted",
        streamer.email,
        None,
    )


async def test_set_role_round_trip(
    session: AsyncSession, admin: UserInfo, streamer: UserInfo
) -> None:
    promoted = await set_role(session, user_id=streamer.id, role=Role.ADMIN, actor=Actor.cli())
    assert promoted.role is Role.ADMIN
    assert (await get_user(session, user_id=streamer.id)).role is Role.ADMIN
    same = await set_role(session, user_id=streamer.id, role=Role.ADMIN, actor=Actor.cli())
    assert same.role is Role.ADMIN
    with pytest.raises(UserNotFound):
        await set_role(session, user_id=9999, role=Role.ADMIN, actor=Actor.cli())


async def test_no_secret_in_any_repr(session: AsyncSession, streamer: UserInfo) -> None:
    token, info = await create_session(session, user_id=streamer.id, source_address=None)
    assert token not in repr(info)
    assert info.csrf_token not in repr(info)
    assert "$argon2" not in repr(streamer)


def test_audit_table_has_no_password_column() -> None:
    assert not [c for c in AuditEntry.__table__.columns if "password" in c.name]
