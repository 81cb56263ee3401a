from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync.accounts import (
    AccountDisabled,
    InvalidTokenName,
    TokenNotFound,
    UserInfo,
    UserNotFound,
    change_password,
    create_token,
    delete_user,
    disable_user,
    enable_user,
    list_tokens,
    mask_token,
    redact_tokens,
    resolve_token,
    revoke_token,
    set_role,
)
from stream_sync.audit import Actor
from stream_sync.db.models import ApiToken, Role, utcnow

from .conftest import PASSWORD, audit_dump, audit_rows

TOKEN_RE = re.compile(r"sst_[0-9A-Za-z]{12}_[0-9A-Za-z]{43}")


async def _stored(sessions: async_sessionmaker[AsyncSession], token_id: str) -> ApiToken:
    async with sessions() as fresh, fresh.begin():
        row = await fresh.scalar(select(ApiToken).where(ApiToken.token_id == token_id))
        assert row is not None
        return row


async def test_create_token(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    actor = Actor(streamer.email, streamer.id, "192.0.2.6")
    info, token = await create_token(
        session, user_id=streamer.id, name="  obs script ", actor=actor
    )
    assert TOKEN_RE.fullmatch(token)
    assert token[4:16] == info.token_id
    assert info.name == "obs script"
    assert (info.last_used_at, info.revoked) == (None, False)
    assert token not in repr(info)
    row = await _stored(sessions, info.token_id)
    assert row.token_hash == hashlib.sha256(token.encode()).digest()
    entry = (await audit_rows(sessions))[-1]
    assert (entry.action, entry.actor_user_id) == ("token.created", streamer.id)
    assert entry.details == {
        "user_id": streamer.id,
        "token_id": info.token_id,
        "name": "obs script",
    }
    dump = await audit_dump(sessions)
    assert token not in dump
    assert token[17:] not in dump  # the secret part


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\there", "new\nline", "\x00"])
async def test_token_names(session: AsyncSession, streamer: UserInfo, name: str) -> None:
    with pytest.raises(InvalidTokenName) as caught:
        await create_token(session, user_id=streamer.id, name=name, actor=Actor.cli())
    assert caught.value.status == 422
    assert await list_tokens(session, user_id=streamer.id) == []


async def test_token_name_limits_accepted(session: AsyncSession, streamer: UserInfo) -> None:
    info, _ = await create_token(session, user_id=streamer.id, name="é" * 64, actor=Actor.cli())
    assert info.name == "é" * 64


async def test_create_refuses_unknown_and_disabled_users(
    session: AsyncSession, admin: UserInfo, streamer: UserInfo
) -> None:
    with pytest.raises(UserNotFound):
        await create_token(session, user_id=9999, name="x", actor=Actor.cli())
    await disable_user(session, user_id=streamer.id, actor=Actor.cli())
    with pytest.raises(AccountDisabled):
        await create_token(session, user_id=streamer.id, name="x", actor=Actor.cli())


async def test_list_tokens_is_per_user(
    session: AsyncSession, admin: UserInfo, streamer: UserInfo
) -> None:
    first, _ = await create_token(session, user_id=streamer.id, name="one", actor=Actor.cli())
    second, _ = await create_token(session, user_id=streamer.id, name="two", actor=Actor.cli())
    await create_token(session, user_id=admin.id, name="admin's", actor=Actor.cli())
    await revoke_token(session, user_id=streamer.id, token_id=first.token_id, actor=Actor.cli())
    listed = await list_tokens(session, user_id=streamer.id)
    assert [(t.token_id, t.name, t.revoked) for t in listed] == [
        (first.token_id, "one", True),
        (second.token_id, "two", False),
    ]


async def test_resolve_token(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    info, token = await create_token(session, user_id=streamer.id, name="ci", actor=Actor.cli())
    assert await resolve_token(session, token=token) == streamer
    assert (await _stored(sessions, info.token_id)).last_used_at is not None


async def test_last_used_is_written_at_most_once_a_minute(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    info, token = await create_token(session, user_id=streamer.id, name="ci", actor=Actor.cli())
    start = utcnow()
    await resolve_token(session, token=token, now=start)
    await resolve_token(session, token=token, now=start + timedelta(seconds=59))
    assert (await _stored(sessions, info.token_id)).last_used_at == start
    later = start + timedelta(seconds=60)
    await resolve_token(session, token=token, now=later)
    assert (await _stored(sessions, info.token_id)).last_used_at == later
    (listed,) = await list_tokens(session, user_id=streamer.id)
    assert listed.last_used_at == later


async def test_resolve_refuses_wrong_secret_and_unknown_id(
    session: AsyncSession, streamer: UserInfo
) -> None:
    _, token = await create_token(session, user_id=streamer.id, name="ci", actor=Actor.cli())
    wrong_secret = token[:-1] + ("a" if token[-1] != "a" else "b")
    wrong_id = token[:4] + ("a" if token[4] != "a" else "b") + token[5:]
    assert await resolve_token(session, token=wrong_secret) is None
    assert await resolve_token(session, token=wrong_id) is None


@pytest.mark.parametrize(
    "transform",
    [
        lambda t: "",
        lambda t: t + "\n",
        lambda t: " " + t,
        lambda t: t + "a",
        lambda t: t[:-1],
        lambda t: "ssk_" + t[4:],
        lambda t: t.replace("_", "-"),
        lambda t: t[:20] + "!" + t[21:],
        lambda t: t * 100,
    ],
)
async def test_resolve_rejects_malformed_tokens(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    streamer: UserInfo,
    transform: object,
) -> None:
    info, token = await create_token(session, user_id=streamer.id, name="ci", actor=Actor.cli())
    assert callable(transform)
    assert await resolve_token(session, token=transform(token)) is None
    assert (await _stored(sessions, info.token_id)).last_used_at is None


async def test_revoke_token(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], streamer: UserInfo
) -> None:
    info, token = await create_token(session, user_id=streamer.id, name="ci", actor=Actor.cli())
    actor = Actor(streamer.email, streamer.id)
    await revoke_token(session, user_id=streamer.id, token_id=info.token_id, actor=actor)
    assert await resolve_token(session, token=token) is None
    assert (await _stored(sessions, info.token_id)).revoked_at is not None
    count = len(await audit_rows(sessions))
    entry = (await audit_rows(sessions))[-1]
    assert (entry.action, entry.details) == (
        "token.revoked",
        {"user_id": streamer.id, "token_id": info.token_id},
    )
    # Revoking again is a quiet no-op.
    await revoke_token(session, user_id=streamer.id, token_id=info.token_id, actor=actor)
    assert len(await audit_rows(sessions)) == count


async def test_other_users_tokens_cannot_be_revoked(
    session: AsyncSession, admin: UserInfo, streamer: UserInfo
) -> None:
    info, token = await create_token(session, user_id=admin.id, name="admin", actor=Actor.cli())
    for token_id in (info.token_id, "A" * 12, "not-an-id", token):
        with pytest.raises(TokenNotFound) as caught:
            await revoke_token(session, user_id=streamer.id, token_id=token_id, actor=Actor.cli())
        assert caught.value.status == 404
        assert token_id not in caught.value.message
    assert await resolve_token(session, token=token) == admin


async def test_disabled_and_deleted_users_tokens_stop(
    session: AsyncSession, admin: UserInfo, streamer: UserInfo
) -> None:
    _, token = await create_token(session, user_id=streamer.id, name="ci", actor=Actor.cli())
    await disable_user(session, user_id=streamer.id, actor=Actor.cli())
    assert await resolve_token(session, token=token) is None
    await enable_user(session, user_id=streamer.id, actor=Actor.cli())
    assert await resolve_token(session, token=token) == streamer
    await delete_user(session, user_id=streamer.id, actor=Actor.cli())
    assert await resolve_token(session, token=token) is None


async def test_tokens_follow_role_and_survive_password_change(
    session: AsyncSession, admin: UserInfo, streamer: UserInfo
) -> None:
    _, token = await create_token(session, user_id=streamer.id, name="ci", actor=Actor.cli())
    await change_password(
        session,
        user_id=streamer.id,
        current_password=PASSWORD,
        new_password="fresh passphrase here",
        actor=Actor.cli(),
    )
    user = await resolve_token(session, token=token)
    assert user is not None
    assert user.role is Role.STREAMER
    await set_role(session, user_id=streamer.id, role=Role.ADMIN, actor=Actor.cli())
    user = await resolve_token(session, token=token)
    assert user is not None
    assert user.role is Role.ADMIN


def test_redact_tokens() -> None:
    token = "sst_AbCdEfGhIjKl_" + "x" * 43
    reset = "ssr_" + "Q" * 43
    text = f"bad header {token}, glued {token}zzz and reset {reset}!"
    redacted = redact_tokens(text)
    assert redacted == (
        "bad header sst_AbCdEfGhIjKl_***, glued sst_AbCdEfGhIjKl_*** and reset ssr_***!"
    )
    assert "x" * 10 not in redacted
    cut_short = redact_tokens(f"cut {token[:30]} and {reset[:20]}")  # as a truncated line
    assert cut_short == "cut sst_AbCdEfGhIjKl_*** and ssr_***"
    assert redact_tokens("nothing to see sst_ here") == "nothing to see sst_ here"


def test_mask_token() -> None:
    assert mask_token("sst_AbCdEfGhIjKl_" + "x" * 43) == "sst_AbCdEfGhIjKl_***"
    assert mask_token("garbage") == "sst_***"
