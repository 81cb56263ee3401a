"""Operator endpoints: users and the ingest servers channels are mapped to."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from ...accounts import users
from ...db.models import Role
from ...servers import service as servers
from ..deps import AdminUser, Context, RowId
from .auth import UserOut

router = APIRouter(prefix="/api", tags=["admin"])


class UserCreateIn(BaseModel):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    role: Role = Role.STREAMER


@router.get("/users")
async def list_users(principal: AdminUser, context: Context) -> list[UserOut]:
    async with context.sessions() as session:
        return [UserOut.model_validate(user) for user in await users.list_users(session)]


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreateIn, principal: AdminUser, context: Context) -> UserOut:
    created = await context.control.create_user(
        email=body.email, password=body.password, role=body.role, actor=principal.actor
    )
    return UserOut.model_validate(created)


@router.get("/users/{user_id}")
async def get_user(user_id: RowId, principal: AdminUser, context: Context) -> UserOut:
    async with context.sessions() as session:
        return UserOut.model_validate(await users.get_user(session, user_id=user_id))


@router.post("/users/{user_id}/disable")
async def disable_user(user_id: RowId, principal: AdminUser, context: Context) -> UserOut:
    """Signs the user out everywhere and stops their stream keys, live publishers included."""
    return UserOut.model_validate(
        await context.control.disable_user(user_id=user_id, actor=principal.actor)
    )


@router.post("/users/{user_id}/enable")
async def enable_user(user_id: RowId, principal: AdminUser, context: Context) -> UserOut:
    async with context.sessions() as session:
        return UserOut.model_validate(
            await users.enable_user(session, user_id=user_id, actor=principal.actor)
        )


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(user_id: RowId, principal: AdminUser, context: Context) -> None:
    await context.control.delete_user(user_id=user_id, actor=principal.actor)


class RoleIn(BaseModel):
    role: Role


@router.put("/users/{user_id}/role")
async def set_role(user_id: RowId, body: RoleIn, principal: AdminUser, context: Context) -> UserOut:
    async with context.sessions() as session:
        return UserOut.model_validate(
            await users.set_role(session, user_id=user_id, role=body.role, actor=principal.actor)
        )


class ResetStartedOut(BaseModel):
    token: str = Field(description="Give it to the user; it works once, for 24 hours.")


@router.post("/users/{user_id}/password-reset")
async def start_password_reset(
    user_id: RowId, principal: AdminUser, context: Context
) -> ResetStartedOut:
    async with context.sessions() as session:
        token = await users.start_password_reset(session, user_id=user_id, actor=principal.actor)
    return ResetStartedOut(token=token)


class ServerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    rtmp_url: str
    region: str | None
    capacity: int
    draining: bool
    created_at: datetime


class ServerCreateIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    rtmp_url: str = Field(min_length=1, max_length=255)
    region: str | None = Field(None, max_length=64)
    capacity: int = Field(100, ge=0, le=100_000)


class ServerUpdateIn(BaseModel):
    rtmp_url: str | None = Field(None, min_length=1, max_length=255)
    region: str | None = Field(None, max_length=64)
    capacity: int | None = Field(None, ge=0, le=100_000)
    draining: bool | None = None


@router.get("/ingest-servers")
async def list_servers(principal: AdminUser, context: Context) -> list[ServerOut]:
    async with context.sessions() as session:
        return [ServerOut.model_validate(server) for server in await servers.list_servers(session)]


@router.post("/ingest-servers", status_code=status.HTTP_201_CREATED)
async def add_server(body: ServerCreateIn, principal: AdminUser, context: Context) -> ServerOut:
    async with context.sessions() as session:
        server = await servers.add_server(
            session,
            name=body.name,
            rtmp_url=body.rtmp_url,
            region=body.region,
            capacity=body.capacity,
            actor=principal.actor,
        )
    return ServerOut.model_validate(server)


@router.patch("/ingest-servers/{server_id}")
async def update_server(
    server_id: RowId, body: ServerUpdateIn, principal: AdminUser, context: Context
) -> ServerOut:
    async with context.sessions() as session:
        server = await servers.update_server(
            session,
            server_id=server_id,
            actor=principal.actor,
            rtmp_url=body.rtmp_url,
            region=body.region,
            capacity=body.capacity,
            draining=body.draining,
        )
    return ServerOut.model_validate(server)


@router.delete("/ingest-servers/{server_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_server(server_id: RowId, principal: AdminUser, context: Context) -> None:
    async with context.sessions() as session:
        await servers.remove_server(session, server_id=server_id, actor=principal.actor)
