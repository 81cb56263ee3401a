"""API tokens for scripts: ``sst_<token id>_<secret>``.

Like stream keys: the token id (12 base62 characters, not secret) finds the row
by index and may be shown and logged; the secret (43 base62 characters, about
256 bits) is never stored, only SHA-256 of the whole token, compared in constant
time. A random 256-bit secret needs no slow hash or salt: there is nothing to
guess. Tokens act as their user with the user's current role, and stop working
when revoked or when the user is disabled or deleted.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync.accounts.errors import (
    AccountDisabled,
    InvalidTokenName,
    TokenNotFound,
    UserNotFound,
)
from stream_sync.accounts.users import UserInfo, _info, random_base62, sha256
from stream_sync.audit import Actor, AuditAction, add_entry
from stream_sync.db.models import ApiToken, User, utcnow

TOKEN_PREFIX = "sst_"  # noqa: S105 - a prefix, not a secret
TOKEN_ID_LENGTH = 12
SECRET_LENGTH = 43
TOKEN_LENGTH = len(TOKEN_PREFIX) + TOKEN_ID_LENGTH + 1 + SECRET_LENGTH
NAME_MAX = 64
LAST_USED_RESOLUTION_SECONDS = 60

_TOKEN_RE = re.compile(r"sst_([0-9A-Za-z]{12})_[0-9A-Za-z]{43}")
_TOKEN_ID_RE = re.compile(r"[0-9A-Za-z]{12}")
# For redaction, any run of base62 after the token id is secret, as with stream keys
# (credentials/keys.py): a token glued to other text or cut short leaves no secret
# characters behind. Reset tokens (users.py) too.
_TOKEN_IN_TEXT_RE = re.compile(r"sst_([0-9A-Za-z]{12})_[0-9A-Za-z]+")
_RESET_IN_TEXT_RE = re.compile(r"ssr_[0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


def validate_token_name(name: str) -> str:
    """The name stripped of surrounding space: 1-64 printable characters."""
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX or not name.isprintable():
        raise InvalidTokenName(f"a token name has 1 to {NAME_MAX} printable characters")
    return name


async def create_token(
    session: AsyncSession, *, user_id: int, name: str, actor: Actor
) -> tuple[TokenInfo, str]:
    """A new token for the user: its info and the token itself, shown this once. Commits."""
    name = validate_token_name(name)
    token_id = random_base62(TOKEN_ID_LENGTH)
    token = f"{TOKEN_PREFIX}{token_id}_{random_base62(SECRET_LENGTH)}"
    now = utcnow()
    async with session.begin():
        user = await session.get(User, user_id, populate_existing=True)
        if user is None:
            raise UserNotFound("there is no such user")
        if user.disabled_at is not None:
            raise AccountDisabled("this account is disabled")
        session.add(
            ApiToken(
                token_id=token_id,
                token_hash=sha256(token),
                user_id=user_id,
                name=name,
                created_at=now,
            )
        )
        add_entry(
            session,
            action=AuditAction.TOKEN_CREATED,
            actor=actor,
            details={"user_id": user_id, "token_id": token_id, "name": name},
        )
    info = TokenInfo(token_id=token_id, name=name, created_at=now, last_used_at=None, revoked=False)
    return info, token


async def list_tokens(session: AsyncSession, *, user_id: int) -> list[TokenInfo]:
    """The user's tokens, revoked ones included, oldest first. Read-only."""
    async with session.begin():
        rows = (
            await session.execute(
                select(
                    ApiToken.token_id,
                    ApiToken.name,
                    ApiToken.created_at,
                    ApiToken.last_used_at,
                    ApiToken.revoked_at,
                )
                .where(ApiToken.user_id == user_id)
                .order_by(ApiToken.created_at, ApiToken.id)
            )
        ).all()
    return [
        TokenInfo(
            token_id=row.token_id,
            name=row.name,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked=row.revoked_at is not None,
        )
        for row in rows
    ]


async def revoke_token(session: AsyncSession, *, user_id: int, token_id: str, actor: Actor) -> None:
    """Revoke one of the user's own tokens; anyone else's is TokenNotFound. Commits.

    Revoking an already revoked token is a no-op.
    """
    not_found = TokenNotFound("there is no such token")
    if not _TOKEN_ID_RE.fullmatch(token_id):
        raise not_found
    async with session.begin():
        found = (
            await session.execute(
                select(ApiToken.id, ApiToken.revoked_at).where(
                    ApiToken.token_id == token_id, ApiToken.user_id == user_id
                )
            )
        ).one_or_none()
        if found is None:
            raise not_found
        if found.revoked_at is not None:
            return
        await session.execute(
            update(ApiToken)
            .where(ApiToken.id == found.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        add_entry(
            session,
            action=AuditAction.TOKEN_REVOKED,
            actor=actor,
            details={"user_id": user_id, "token_id": token_id},
        )


async def resolve_token(
    session: AsyncSession, *, token: str, now: datetime | None = None
) -> UserInfo | None:
    """The user a presented token acts as, or None. Commits only a last-used refresh.

    The format is checked before any query, so junk costs nothing; unknown,
    wrong, revoked and disabled all give None.
    """
    if len(token) != TOKEN_LENGTH:
        return None
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    digest = sha256(token)
    now = now or utcnow()
    async with session.begin():
        found = (
            await session.execute(
                select(
                    ApiToken.id,
                    ApiToken.token_hash,
                    ApiToken.revoked_at,
                    ApiToken.last_used_at,
                    User,
                )
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_id == match.group(1))
                .execution_options(populate_existing=True)
            )
        ).one_or_none()
        if found is None:
            return None
        row_id, stored_hash, revoked_at, last_used_at, user = found
        if (
            not hmac.compare_digest(stored_hash, digest)
            or revoked_at is not None
            or user.disabled_at is not None
        ):
            return None
        if last_used_at is None or (now - last_used_at).total_seconds() >= (
            LAST_USED_RESOLUTION_SECONDS
        ):
            await session.execute(
                update(ApiToken)
                .where(ApiToken.id == row_id)
                .values(last_used_at=now)
                .execution_options(synchronize_session=False)
            )
    return _info(user)


def mask_token(token: str) -> str:
    """Enough to recognise a token in a list, never enough to use it."""
    match = _TOKEN_RE.fullmatch(token) if len(token) == TOKEN_LENGTH else None
    return f"{TOKEN_PREFIX}{match.group(1)}_***" if match else f"{TOKEN_PREFIX}***"


def redact_tokens(text: str) -> str:
    """Mask API tokens (keeping the token id) and reset tokens in ``text``; for log filters."""
    if TOKEN_PREFIX in text:
        text = _TOKEN_IN_TEXT_RE.sub(lambda m: f"{TOKEN_PREFIX}{m.group(1)}_***", text)
    if "ssr_" in text:
        text = _RESET_IN_TEXT_RE.sub("ssr_***", text)
    return text
