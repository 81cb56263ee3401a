"""Browser sessions: a random cookie token whose SHA-256 is the only thing stored.

A stolen database therefore holds no usable cookie. The CSRF token is random
per session and stored in clear: it only matters together with the cookie.
Resolving a session is one indexed select (by token hash, joined to the user)
and a write at most once a minute to keep ``last_seen_at`` useful for the idle
timeout, so checking every request stays cheap.

A session stops working as soon as it expires, idles out, its user is disabled
or deleted (cascade), or the user's password changed after it was created.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync.accounts.errors import AccountDisabled, UserNotFound
from stream_sync.accounts.users import UserInfo, _delete_sessions, _info, sha256
from stream_sync.audit import Actor, AuditAction, add_entry
from stream_sync.db.models import AuthSession, User, utcnow

TOKEN_BYTES = 32
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32): 43 characters
LAST_SEEN_RESOLUTION = timedelta(minutes=1)
SOURCE_ADDRESS_MAX = 64


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: int
    user: UserInfo
    csrf_token: str = field(repr=False)
    expires_at: datetime


async def create_session(
    session: AsyncSession,
    *,
    user_id: int,
    source_address: str | None,
    ttl: timedelta = timedelta(days=7),
    now: datetime | None = None,
) -> tuple[str, SessionInfo]:
    """Sign a user in: the raw cookie token (shown once, never stored) and the session. Commits.

    Call after ``authenticate``; a user disabled in between gets AccountDisabled.
    """
    now = now or utcnow()
    token = secrets.token_urlsafe(TOKEN_BYTES)
    csrf_token = secrets.token_urlsafe(TOKEN_BYTES)
    async with session.begin():
        user = await session.get(User, user_id, populate_existing=True)
        if user is None:
            raise UserNotFound("there is no such user")
        if user.disabled_at is not None:
            raise AccountDisabled("this account is disabled")
        row = AuthSession(
            token_hash=sha256(token),
            user_id=user_id,
            csrf_token=csrf_token,
            created_at=now,
            expires_at=now + ttl,
            last_seen_at=now,
            source_address=source_address[:SOURCE_ADDRESS_MAX] if source_address else None,
        )
        session.add(row)
        await session.flush()
    return token, SessionInfo(
        session_id=row.id, user=_info(user), csrf_token=csrf_token, expires_at=row.expires_at
    )


async def resolve_session(
    session: AsyncSession,
    *,
    token: str,
    now: datetime | None = None,
    idle_timeout: timedelta = timedelta(days=7),
) -> SessionInfo | None:
    """The live session behind a cookie token, or None. Commits only a last-seen refresh."""
    if not _TOKEN_RE.fullmatch(token):
        return None
    now = now or utcnow()
    async with session.begin():
        found = (
            await session.execute(
                select(AuthSession, User)
                .join(User, User.id == AuthSession.user_id)
                .where(AuthSession.token_hash == sha256(token))
                .execution_options(populate_existing=True)
            )
        ).one_or_none()
        if found is None:
            return None
        row, user = found
        if (
            row.expires_at <= now
            or row.last_seen_at + idle_timeout <= now
            or user.disabled_at is not None
            or row.created_at < user.password_changed_at
        ):
            return None
        if now - row.last_seen_at >= LAST_SEEN_RESOLUTION:
            await session.execute(
                update(AuthSession)
                .where(AuthSession.id == row.id)
                .values(last_seen_at=now)
                .execution_options(synchronize_session=False)
            )
    return SessionInfo(
        session_id=row.id, user=_info(user), csrf_token=row.csrf_token, expires_at=row.expires_at
    )


async def end_session(
    session: AsyncSession, *, token: str, source_address: str | None = None
) -> None:
    """Sign out one browser; audited as a logout. Unknown tokens are ignored. Commits."""
    if not _TOKEN_RE.fullmatch(token):
        return
    async with session.begin():
        user_id = await session.scalar(
            delete(AuthSession)
            .where(AuthSession.token_hash == sha256(token))
            .returning(AuthSession.user_id)
            .execution_options(synchronize_session=False)
        )
        if user_id is None:
            return
        email = await session.scalar(select(User.email).where(User.id == user_id))
        add_entry(
            session,
            action=AuditAction.LOGOUT,
            actor=Actor(email or "unknown", user_id, source_address),
        )


async def end_user_sessions(
    session: AsyncSession,
    *,
    user_id: int,
    except_token: str | None = None,
    actor: Actor | None = None,
) -> int:
    """Sign a user out everywhere (but the browser holding ``except_token``). Commits.

    Returns how many sessions ended. With an ``actor``, audited as a logout.
    """
    async with session.begin():
        ended = await _delete_sessions(
            session, user_id, keep_hash=sha256(except_token) if except_token else None
        )
        if actor is not None:
            add_entry(
                session,
                action=AuditAction.LOGOUT,
                actor=actor,
                details={"user_id": user_id, "sessions_ended": ended},
            )
    return ended


async def purge_expired_sessions(
    session: AsyncSession,
    *,
    now: datetime | None = None,
    idle_timeout: timedelta = timedelta(days=7),
) -> int:
    """Delete sessions that can no longer resolve; for a periodic cleanup task. Commits."""
    now = now or utcnow()
    async with session.begin():
        purged = (
            await session.scalars(
                delete(AuthSession)
                .where(
                    (AuthSession.expires_at <= now)
                    | (AuthSession.last_seen_at <= now - idle_timeout)
                )
                .returning(AuthSession.id)
                .execution_options(synchronize_session=False)
            )
        ).all()
    return len(purged)
