"""Sign-in, sign-out, the signed-in user, their password and API tokens."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from ...accounts import api_tokens, users, web_sessions
from ...accounts.errors import InvalidCredentials, TooManyAttempts
from ...db.models import Role
from ..deps import SESSION_COOKIE, Address, Context, CurrentUser, over_https

router = APIRouter(prefix="/api", tags=["auth"])


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    role: Role
    disabled: bool
    created_at: datetime


class LoginIn(BaseModel):
    email: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class SessionOut(BaseModel):
    user: UserOut
    csrf_token: str | None = Field(
        None, description="Send it as X-CSRF-Token with every state-changing request."
    )


@router.post("/auth/login")
async def login(
    body: LoginIn, request: Request, response: Response, context: Context, address: Address
) -> SessionOut:
    email = body.email.strip().lower()
    wait = context.throttle.check(email, address)
    if wait > 0:
        context.requests.note("login_throttled", address, "a sign-in while locked out")
        raise TooManyAttempts(wait)
    try:
        async with context.sessions() as session:
            user = await users.authenticate(
                session, email=body.email, password=body.password, source_address=address
            )
    except InvalidCredentials:
        context.throttle.failed(email, address)
        raise
    context.throttle.succeeded(email, address)
    ttl = timedelta(hours=context.settings.session_ttl_hours)
    async with context.sessions() as session:
        token, info = await web_sessions.create_session(
            session, user_id=user.id, source_address=address, ttl=ttl
        )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=context.cookie_secure(https=over_https(request, context)),
        path="/",
    )
    return SessionOut(user=UserOut.model_validate(user), csrf_token=info.csrf_token)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request, response: Response, context: Context, address: Address) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        async with context.sessions() as session:
            await web_sessions.end_session(session, token=token, source_address=address)
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/me")
async def me(principal: CurrentUser) -> SessionOut:
    return SessionOut(user=UserOut.model_validate(principal.user), csrf_token=principal.csrf_token)


class PasswordChangeIn(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(body: PasswordChangeIn, principal: CurrentUser, context: Context) -> None:
    async with context.sessions() as session:
        await users.change_password(
            session,
            user_id=principal.user.id,
            current_password=body.current_password,
            new_password=body.new_password,
            actor=principal.actor,
            keep_session_token=principal.session_token,
            throttle=context.throttle,  # a stolen session can't guess the password freely
        )


class PasswordResetIn(BaseModel):
    token: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=1, max_length=1024)


@router.post("/auth/password-reset", status_code=status.HTTP_204_NO_CONTENT)
async def complete_password_reset(
    body: PasswordResetIn, context: Context, address: Address
) -> None:
    """Finish a reset an admin started: the admin hands the one-time token to the user."""
    async with context.sessions() as session:
        await users.complete_password_reset(
            session, token=body.token, new_password=body.new_password, source_address=address
        )


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    token_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


class TokenCreateIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class TokenCreatedOut(TokenOut):
    token: str = Field(description="Shown only in this response.")


@router.get("/me/tokens")
async def list_tokens(principal: CurrentUser, context: Context) -> list[TokenOut]:
    async with context.sessions() as session:
        tokens = await api_tokens.list_tokens(session, user_id=principal.user.id)
    return [TokenOut.model_validate(token) for token in tokens]


@router.post("/me/tokens", status_code=status.HTTP_201_CREATED)
async def create_token(
    body: TokenCreateIn, principal: CurrentUser, context: Context
) -> TokenCreatedOut:
    async with context.sessions() as session:
        info, token = await api_tokens.create_token(
            session, user_id=principal.user.id, name=body.name, actor=principal.actor
        )
    return TokenCreatedOut(**TokenOut.model_validate(info).model_dump(), token=token)


@router.delete("/me/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(token_id: str, principal: CurrentUser, context: Context) -> None:
    async with context.sessions() as session:
        await api_tokens.revoke_token(
            session, user_id=principal.user.id, token_id=token_id, actor=principal.actor
        )
