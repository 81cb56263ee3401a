"""A channel's push targets: where its live stream is relayed (YouTube, Twitch, an origin).

The platform's stream key is write-only: it goes in with a create or an update and
comes back only as its last characters. Every change is applied at once to a
live stream, by the node that holds it.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from ...outputs import targets
from ...outputs.destinations import KEY_MAX, URL_MAX
from ..deps import Context, CurrentUser, RowId, VisibleChannel

router = APIRouter(prefix="/api/channels", tags=["push targets"])


class PushTargetOut(BaseModel):
    id: int
    name: str
    url: str = Field(description="rtmp[s]://host[:port]/app: the platform's server URL.")
    key_masked: str = Field(description="The stream key's last characters, or dots only.")
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, info: targets.TargetInfo) -> PushTargetOut:
        return cls(
            id=info.id,
            name=info.name,
            url=info.url,
            key_masked="••••" + info.key_hint,
            enabled=info.enabled,
            created_at=info.created_at,
            updated_at=info.updated_at,
        )


class PushTargetIn(BaseModel):
    name: str = Field(min_length=1, max_length=targets.NAME_MAX)
    url: str = Field(min_length=1, max_length=URL_MAX, description="rtmp[s]://host[:port]/app")
    key: str = Field(min_length=1, max_length=KEY_MAX, description="The platform's stream key.")
    enabled: bool = True


class PushTargetChangeIn(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=targets.NAME_MAX)
    url: str | None = Field(None, min_length=1, max_length=URL_MAX)
    key: str | None = Field(None, min_length=1, max_length=KEY_MAX)
    enabled: bool | None = None


@router.get("/{channel_ref}/push-targets")
async def list_push_targets(channel: VisibleChannel, context: Context) -> list[PushTargetOut]:
    async with context.sessions() as session:
        return [
            PushTargetOut.of(info)
            for info in await targets.list_targets(session, channel_id=channel.id)
        ]


@router.post("/{channel_ref}/push-targets", status_code=status.HTTP_201_CREATED)
async def add_push_target(
    body: PushTargetIn, channel: VisibleChannel, principal: CurrentUser, context: Context
) -> PushTargetOut:
    async with context.sessions() as session:
        info = await targets.create_target(
            session,
            secrets=context.secrets,
            channel_id=channel.id,
            name=body.name,
            url=body.url,
            key=body.key,
            enabled=body.enabled,
            actor=principal.actor,
        )
    await context.control.outputs_changed(channel.id)
    return PushTargetOut.of(info)


@router.patch("/{channel_ref}/push-targets/{target_id}")
async def change_push_target(
    target_id: RowId,
    body: PushTargetChangeIn,
    channel: VisibleChannel,
    principal: CurrentUser,
    context: Context,
) -> PushTargetOut:
    """Change what is given; a new key replaces the old one (it is never shown)."""
    async with context.sessions() as session:
        info = await targets.update_target(
            session,
            secrets=context.secrets,
            channel_id=channel.id,
            target_id=target_id,
            actor=principal.actor,
            **body.model_dump(exclude_unset=True, exclude_none=True),
        )
    await context.control.outputs_changed(channel.id)
    return PushTargetOut.of(info)


@router.delete("/{channel_ref}/push-targets/{target_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_push_target(
    target_id: RowId, channel: VisibleChannel, principal: CurrentUser, context: Context
) -> None:
    async with context.sessions() as session:
        await targets.delete_target(
            session, channel_id=channel.id, target_id=target_id, actor=principal.actor
        )
    await context.control.outputs_changed(channel.id)
