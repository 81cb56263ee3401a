"""User accounts: creation, sign-in, passwords, resets, roles, disabling.

Transactions follow ``credentials.service``: each function is one unit of work
on a session with no transaction in progress, commits before returning, and
leaves the session usable after a failure. Audit rows are staged in the same
transaction as the change. Password hashing (tens of milliseconds) always
happens between transactions, never while a database connection is held, so a
function that hashes uses a short read transaction and then a short write
transaction whose WHERE clause re-checks what was read.

API tokens survive password changes and resets: they are separate credentials
that the user lists and revokes on their own, and scripts should not break on a
routine password change. Disabling or deleting a user stops them at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, exists, func, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from stream_sync.accounts.errors import (
    AccountDisabled,
    InvalidCredentials,
    InvalidEmail,
    InvalidResetToken,
    LastAdmin,
    TooManyAttempts,
    UserExists,
    UserNotFound,
)
from stream_sync.accounts.passwords import (
    PASSWORD_MAX,
    check_password_policy,
    dummy_verify_async,
    hash_password_async,
    needs_rehash,
    verify_password_async,
)
from stream_sync.accounts.throttle import LoginThrottle
from stream_sync.audit import Actor, AuditAction, add_entry
from stream_sync.db.models import EMAIL_MAX, AuthSession, Role, User, utcnow

BASE62_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
RESET_TOKEN_PREFIX = "ssr_"  # noqa: S105 - a prefix, not a secret
RESET_SECRET_LENGTH = 43  # base62: about 256 bits
_RESET_TOKEN_RE = re.compile(r"ssr_[0-9A-Za-z]{43}")
# A deliberately loose shape check: one "@", no spaces or control characters, a
# dot in the domain. Deliverability is the mail server's business.
_EMAIL_CHAR = r"[^@\s\x00-\x1f\x7f]"
_LABEL_CHAR = r"[^@\s.\x00-\x1f\x7f]"
_EMAIL_RE = re.compile(rf"{_EMAIL_CHAR}{{1,64}}@(?:{_LABEL_CHAR}+\.)+{_LABEL_CHAR}{{2,63}}")


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    email: str
    role: Role
    created_at: datetime
    disabled: bool
    password_changed_at: datetime


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62_ALPHABET) for _ in range(length))


def sha256(text: str) -> bytes:
    """Enough for random 256-bit tokens: nothing to brute-force, so no salt or HMAC key."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def normalize_email(email: str) -> str:
    """The stored form (stripped, lowercase), or InvalidEmail. The input is never echoed."""
    normalized = email.strip().lower()
    if len(normalized) > EMAIL_MAX or not _EMAIL_RE.fullmatch(normalized):
        raise InvalidEmail("enter an email address such as name@example.com")
    return normalized


async def create_user(
    session: AsyncSession, *, email: str, password: str, role: Role, actor: Actor
) -> UserInfo:
    """Create an account; emails are unique regardless of case. Commits."""
    email = normalize_email(email)
    role = Role(role)
    check_password_policy(password, email=email)
    password_hash = await hash_password_async(password)
    try:
        async with session.begin():
            if await session.scalar(select(User.id).where(User.email == email)) is not None:
                raise UserExists("an account with this email already exists")
            now = utcnow()
            user = User(
                email=email,
                password_hash=password_hash,
                role=role.value,
                created_at=now,
                password_changed_at=now,
            )
            session.add(user)
            await session.flush()
            add_entry(
                session,
                action=AuditAction.USER_CREATED,
                actor=actor,
                details={"user_id": user.id, "email": email, "role": role.value},
            )
    except IntegrityError:
        # A concurrent create of the same email got in between the check and the insert.
        raise UserExists("an account with this email already exists") from None
    return _info(user)


async def count_admins(session: AsyncSession) -> int:
    """Enabled admins. Read-only."""
    async with session.begin():
        count = await session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == Role.ADMIN.value, User.disabled_at.is_(None))
        )
    return count or 0


async def list_users(session: AsyncSession) -> list[UserInfo]:
    """Every account, by email. Read-only."""
    async with session.begin():
        rows = (await session.scalars(select(User).order_by(User.email))).all()
    return [_info(row) for row in rows]


async def get_user(session: AsyncSession, *, user_id: int) -> UserInfo:
    async with session.begin():
        return _info(await _require_user(session, user_id))


async def find_user(session: AsyncSession, *, email: str) -> UserInfo:
    email = normalize_email(email)
    async with session.begin():
        row = await session.scalar(_by_email(email))
    if row is None:
        raise UserNotFound("there is no account with this email")
    return _info(row)


async def authenticate(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    source_address: str | None,
    throttle: LoginThrottle | None = None,
) -> UserInfo:
    """Check a sign-in. Every failure is InvalidCredentials and is audited.

    With a ``throttle``, a throttled attempt raises TooManyAttempts before any
    hashing or database work, and the outcome is reported to the throttle.
    Unknown emails cost one verification like the others, so timing does not
    tell which accounts exist; disabled accounts fail like a wrong password.
    """
    if throttle is not None:
        wait = throttle.check(email, source_address)
        if wait > 0:
            raise TooManyAttempts(wait)
    try:
        normalized: str | None = normalize_email(email)
    except InvalidEmail:
        normalized = None
    row = None
    if normalized is not None:
        async with session.begin():
            row = await session.scalar(_by_email(normalized))
    if len(password) > PASSWORD_MAX:
        # Never a valid password; only says the input is too long, which is public.
        reason = "wrong_password" if row is not None else "unknown_user"
    elif row is None:
        await dummy_verify_async(password)
        reason = "unknown_user" if normalized is not None else "invalid_email"
    elif not await verify_password_async(row.password_hash, password):
        reason = "wrong_password"
    elif row.disabled_at is not None:
        reason = "disabled"
    else:
        reason = None

    if reason is not None or row is None:
        if throttle is not None:
            throttle.failed(email, source_address)
        async with session.begin():
            add_entry(
                session,
                action=AuditAction.LOGIN_FAILED,
                actor=Actor(normalized or "unknown", None, source_address),
                details={"reason": reason},
            )
        raise InvalidCredentials()

    if throttle is not None:
        throttle.succeeded(email, source_address)
    new_hash = await hash_password_async(password) if needs_rehash(row.password_hash) else None
    async with session.begin():
        if new_hash is not None:
            # Only if the password did not change meanwhile.
            await session.execute(
                update(User)
                .where(User.id == row.id, User.password_hash == row.password_hash)
                .values(password_hash=new_hash)
                .execution_options(synchronize_session=False)
            )
        add_entry(
            session,
            action=AuditAction.LOGIN_SUCCEEDED,
            actor=Actor(row.email, row.id, source_address),
        )
    return _info(row)


async def change_password(
    session: AsyncSession,
    *,
    user_id: int,
    current_password: str,
    new_password: str,
    actor: Actor,
    keep_session_token: str | None = None,
    throttle: LoginThrottle | None = None,
) -> None:
    """The user's own change: needs the current password. Commits.

    Every other web session of the user ends; the one whose cookie token is
    ``keep_session_token`` (the browser making the change) stays signed in.
    API tokens stay (see the module docstring). With a ``throttle``, wrong
    current passwords count like failed sign-ins (keyed by the user's email and
    the actor's address), so a stolen session cannot guess the password freely.
    """
    async with session.begin():
        row = await _require_user(session, user_id)
        email, old_hash = row.email, row.password_hash
    if throttle is not None:
        wait = throttle.check(email, actor.source_address)
        if wait > 0:
            raise TooManyAttempts(wait)
    if len(current_password) > PASSWORD_MAX or not await verify_password_async(
        old_hash, current_password
    ):
        if throttle is not None:
            throttle.failed(email, actor.source_address)
        raise InvalidCredentials("the current password is wrong")
    check_password_policy(new_password, email=email)
    new_hash = await hash_password_async(new_password)
    now = utcnow()
    async with session.begin():
        changed = await session.scalar(
            update(User)
            .where(User.id == user_id, User.password_hash == old_hash)
            .values(**_new_password(new_hash, now))
            .returning(User.id)
            .execution_options(synchronize_session=False)
        )
        if changed is None:
            # Changed or deleted meanwhile: the verified password is no longer current.
            raise InvalidCredentials("the current password is wrong")
        keep = sha256(keep_session_token) if keep_session_token else None
        ended = await _delete_sessions(session, user_id, keep_hash=keep)
        if keep is not None:
            # The kept session is re-established under the new password, so the
            # "created before the password changed" check must not end it.
            await session.execute(
                update(AuthSession)
                .where(AuthSession.user_id == user_id, AuthSession.token_hash == keep)
                .values(created_at=now)
                .execution_options(synchronize_session=False)
            )
        add_entry(
            session,
            action=AuditAction.PASSWORD_CHANGED,
            actor=actor,
            details={"user_id": user_id, "sessions_ended": ended},
        )


async def set_password(
    session: AsyncSession, *, user_id: int, new_password: str, actor: Actor
) -> None:
    """An admin's or the CLI's change: no current password; every session ends. Commits."""
    async with session.begin():
        email = (await _require_user(session, user_id)).email
    check_password_policy(new_password, email=email)
    new_hash = await hash_password_async(new_password)
    async with session.begin():
        changed = await session.scalar(
            update(User)
            .where(User.id == user_id)
            .values(**_new_password(new_hash, utcnow()))
            .returning(User.id)
            .execution_options(synchronize_session=False)
        )
        if changed is None:
            raise UserNotFound("there is no such user")
        ended = await _delete_sessions(session, user_id)
        add_entry(
            session,
            action=AuditAction.PASSWORD_CHANGED,
            actor=actor,
            details={"user_id": user_id, "sessions_ended": ended, "by_admin": True},
        )


async def start_password_reset(
    session: AsyncSession,
    *,
    user_id: int,
    actor: Actor,
    ttl: timedelta = timedelta(hours=24),
    now: datetime | None = None,
) -> str:
    """A one-time reset token for the admin to hand over. Only its hash is stored. Commits.

    A new reset replaces a pending one. Disabled accounts are refused: enable first.
    """
    now = now or utcnow()
    token = RESET_TOKEN_PREFIX + random_base62(RESET_SECRET_LENGTH)
    async with session.begin():
        row = await _require_user(session, user_id)
        if row.disabled_at is not None:
            raise AccountDisabled("this account is disabled; enable it before a reset")
        row.reset_token_hash = sha256(token)
        row.reset_expires_at = now + ttl
        add_entry(
            session,
            action=AuditAction.PASSWORD_RESET_STARTED,
            actor=actor,
            details={"user_id": user_id, "expires_at": (now + ttl).isoformat()},
        )
    return token


async def complete_password_reset(
    session: AsyncSession,
    *,
    token: str,
    new_password: str,
    source_address: str | None,
    now: datetime | None = None,
) -> UserInfo:
    """Set a new password with a reset token; the token is spent and every session ends.

    The token is found by the hash of what was presented (no comparison of
    secrets in Python, so nothing to time). A weak new password is refused
    without spending the token, so the user can try again. Commits.
    """
    invalid = InvalidResetToken("this reset link is invalid or has expired; ask an admin")
    if len(token) != len(RESET_TOKEN_PREFIX) + RESET_SECRET_LENGTH or not (
        _RESET_TOKEN_RE.fullmatch(token)
    ):
        raise invalid
    digest = sha256(token)
    now = now or utcnow()
    async with session.begin():
        row = await session.scalar(
            select(User)
            .where(User.reset_token_hash == digest)
            .execution_options(populate_existing=True)
        )
    if (
        row is None
        or row.disabled_at is not None
        or row.reset_expires_at is None
        or row.reset_expires_at <= now
    ):
        raise invalid
    check_password_policy(new_password, email=row.email)
    new_hash = await hash_password_async(new_password)
    async with session.begin():
        # Single use: only the transaction that clears this exact token wins.
        changed = await session.scalar(
            update(User)
            .where(User.id == row.id, User.reset_token_hash == digest, User.disabled_at.is_(None))
            .values(**_new_password(new_hash, now))
            .returning(User.id)
            .execution_options(synchronize_session=False)
        )
        if changed is None:
            raise invalid
        ended = await _delete_sessions(session, row.id)
        add_entry(
            session,
            action=AuditAction.PASSWORD_RESET_COMPLETED,
            actor=Actor(row.email, row.id, source_address),
            details={"user_id": row.id, "sessions_ended": ended},
        )
    return replace(_info(row), password_changed_at=now)


async def disable_user(session: AsyncSession, *, user_id: int, actor: Actor) -> UserInfo:
    """Stop an account now: sessions end, tokens and pending resets stop working. Commits.

    Idempotent. The last enabled admin cannot be disabled (LastAdmin).
    """
    async with session.begin():
        row = await _require_user(session, user_id)
        if row.disabled_at is not None:
            return _info(row)
        now = utcnow()
        changed = await session.scalar(
            update(User)
            .where(User.id == user_id, await _not_last_admin(session, row))
            .values(disabled_at=now, reset_token_hash=None, reset_expires_at=None)
            .returning(User.id)
            .execution_options(synchronize_session=False)
        )
        if changed is None:
            raise LastAdmin("cannot disable the last enabled admin; make another admin first")
        ended = await _delete_sessions(session, user_id)
        add_entry(
            session,
            action=AuditAction.USER_DISABLED,
            actor=actor,
            details={"user_id": user_id, "email": row.email, "sessions_ended": ended},
        )
    return replace(_info(row), disabled=True)


async def enable_user(session: AsyncSession, *, user_id: int, actor: Actor) -> UserInfo:
    """Idempotent; the user's API tokens that were not revoked work again. Commits."""
    async with session.begin():
        row = await _require_user(session, user_id)
        if row.disabled_at is not None:
            row.disabled_at = None
            add_entry(
                session,
                action=AuditAction.USER_ENABLED,
                actor=actor,
                details={"user_id": user_id, "email": row.email},
            )
    return _info(row)


async def delete_user(session: AsyncSession, *, user_id: int, actor: Actor) -> None:
    """Delete the account with its sessions and tokens (cascade). Commits.

    The last enabled admin cannot be deleted. Audit rows that name the user as
    actor keep the email; their user id becomes NULL.
    """
    async with session.begin():
        row = await _require_user(session, user_id)
        add_entry(
            session,
            action=AuditAction.USER_DELETED,
            actor=actor,
            details={"user_id": user_id, "email": row.email, "role": row.role},
        )
        # The audit row goes in first: the actor may be the user being deleted.
        await session.flush()
        deleted = await session.scalar(
            delete(User)
            .where(User.id == user_id, await _not_last_admin(session, row))
            .returning(User.id)
            .execution_options(synchronize_session=False)
        )
        if deleted is None:
            raise LastAdmin("cannot delete the last enabled admin; make another admin first")
        session.expunge(row)


async def set_role(session: AsyncSession, *, user_id: int, role: Role, actor: Actor) -> UserInfo:
    """Change a user's role; the last enabled admin cannot be demoted. Commits."""
    role = Role(role)
    async with session.begin():
        row = await _require_user(session, user_id)
        if row.role == role.value:
            return _info(row)
        condition = await _not_last_admin(session, row) if role is not Role.ADMIN else true()
        changed = await session.scalar(
            update(User)
            .where(User.id == user_id, condition)
            .values(role=role.value)
            .returning(User.id)
            .execution_options(synchronize_session=False)
        )
        if changed is None:
            raise LastAdmin("cannot demote the last enabled admin; make another admin first")
        add_entry(
            session,
            action=AuditAction.USER_ROLE_CHANGED,
            actor=actor,
            details={"user_id": user_id, "role": role.value},
        )
    return replace(_info(row), role=role)


def _new_password(password_hash: str, now: datetime) -> dict[str, Any]:
    """The columns a new password sets; a pending reset is moot once one is chosen."""
    return {
        "password_hash": password_hash,
        "password_changed_at": now,
        "reset_token_hash": None,
        "reset_expires_at": None,
    }


def _by_email(email: str) -> Select[User]:
    return select(User).where(User.email == email).execution_options(populate_existing=True)


def _info(row: User) -> UserInfo:
    return UserInfo(
        id=row.id,
        email=row.email,
        role=Role(row.role),
        created_at=row.created_at,
        disabled=row.disabled_at is not None,
        password_changed_at=row.password_changed_at,
    )


async def _require_user(session: AsyncSession, user_id: int) -> User:
    # populate_existing: the session may hold this user from an earlier call.
    row = await session.get(User, user_id, populate_existing=True)
    if row is None:
        raise UserNotFound("there is no such user")
    return row


async def _not_last_admin(session: AsyncSession, row: User) -> ColumnElement[bool]:
    """A WHERE condition for the statement that disables, deletes or demotes ``row``.

    For an enabled admin it requires another enabled admin to exist, checked by
    the writing statement itself: on SQLite a write statement runs under the
    database's single write lock, so the check cannot be stale. On PostgreSQL the
    enabled admins' rows are locked first (FOR UPDATE), so two admins removing
    each other at once queue up, and the second statement sees the first's commit.
    """
    if row.role != Role.ADMIN.value or row.disabled_at is not None:
        return true()
    await session.execute(
        select(User.id)
        .where(User.role == Role.ADMIN.value, User.disabled_at.is_(None))
        .with_for_update()
    )
    other = aliased(User)
    return exists().where(
        other.role == Role.ADMIN.value, other.disabled_at.is_(None), other.id != row.id
    )


async def _delete_sessions(
    session: AsyncSession, user_id: int, *, keep_hash: bytes | None = None
) -> int:
    """End the user's web sessions (all, or all but one), inside the caller's transaction."""
    statement = delete(AuthSession).where(AuthSession.user_id == user_id)
    if keep_hash is not None:
        statement = statement.where(AuthSession.token_hash != keep_hash)
    ended = (
        await session.scalars(
            statement.returning(AuthSession.id).execution_options(synchronize_session=False)
        )
    ).all()
    return len(ended)
