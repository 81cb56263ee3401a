"""Channels, their keys, sessions and audit trail.

A key appears in a response only where the user just asked for it (create, reveal,
reset, rotate), never in a GET. Someone else's channel answers 404, as if it did
not exist.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from ...accounts import users
from ...audit import list_entries
from ...credentials import playback as playback_tokens
from ...credentials import service as credentials
from ...monitor import history
from ...monitor.settings import monitor_settings, set_monitor_settings
from ...servers import service as servers
from ...state.errors import StateUnavailable
from ..context import ApiContext
from ..deps import AdminUser, Context, CurrentUser, VisibleChannel
from ..errors import NotFound, PreviewUnavailable, PreviewUnsupported, SharedStateUnavailable

router = APIRouter(prefix="/api/channels", tags=["channels"])


class KeyOut(BaseModel):
    key_id: str | None
    masked: str | None = Field(description="Prefix, key id and the last 4 characters.")
    created_at: datetime | None
    rotating_key_ids: list[str] = Field(description="Rotated-out keys still valid for a while.")


class ChannelOut(BaseModel):
    id: str = Field(description="The channel's public id.")
    name: str
    owner_id: int | None
    created_at: datetime
    ingest_server: str | None
    server_url: str = Field(description="OBS: Settings > Stream > Server.")
    secure_server_url: str | None = Field(
        None, description="The same over TLS (RTMPS), when the server offers it."
    )
    status: str = Field(description="offline, live, reconnecting or testing")
    status_since: float | None = Field(None, description="Epoch seconds of the last change.")
    grace_left: float | None = Field(
        None, description="While reconnecting: seconds before the session closes."
    )
    session_id: int | None = None
    grace_seconds: int | None = Field(None, description="This channel's grace period.")
    test_mode: bool = False
    record: bool = Field(False, description="Each session is recorded to a file.")
    stats: dict[str, Any] | None = Field(
        None, description="Live measurements and health, with last_update (epoch seconds)."
    )


class ChannelDetailOut(ChannelOut):
    key: KeyOut


class ChannelCreateIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    owner_email: str | None = Field(None, max_length=254)


class ChannelCreatedOut(ChannelOut):
    key_id: str
    stream_key: str = Field(description="Shown only in this response; OBS: Stream Key.")


async def _server_urls(
    context: ApiContext, server_id: int | None
) -> tuple[str | None, str, str | None]:
    """The channel's ingest server: its name, its URL, and its RTMPS URL if it has one."""
    if server_id is None:
        return None, context.live.default_rtmp_url(), context.live.default_rtmps_url()
    async with context.sessions() as session:
        server = await servers.get_server(session, ref=str(server_id))
    secure = server.rtmp_url if server.rtmp_url.startswith("rtmps://") else None
    return server.name, server.rtmp_url, secure


async def _channel_out(context: ApiContext, channel: credentials.ChannelInfo) -> dict[str, Any]:
    """The channel with its status as the database knows it and its live measurements."""
    server_name, server_url, secure_url = await _server_urls(context, channel.ingest_server_id)
    async with context.sessions() as session:
        current = await history.open_session(session, channel_id=channel.id)
    async with context.sessions() as session:
        settings = await monitor_settings(session, channel_id=channel.id)
    live = context.live.live_streams().get(channel.id)
    status, grace_left = "offline", None
    if current is not None:
        status = current.status
        if current.grace_until is not None:
            grace_left = round(max(0.0, current.grace_until - time.time()), 1)
    return {
        "id": channel.public_id,
        "name": channel.name,
        "owner_id": channel.owner_id,
        "created_at": channel.created_at,
        "ingest_server": server_name,
        "server_url": server_url,
        "secure_server_url": secure_url,
        "status": status,
        "status_since": current.status_since if current else None,
        "grace_left": grace_left,
        "session_id": current.id if current else None,
        "grace_seconds": settings[0],
        "test_mode": settings[1],
        "record": settings.record,
        "stats": live.as_dict() if live and current is not None else None,
    }


class ChannelSettingsIn(BaseModel):
    grace_seconds: int | None = Field(
        None, ge=0, le=3600, description="Reconnect grace; omit to keep, null for the default."
    )
    test_mode: bool | None = None
    record: bool | None = Field(None, description="Record each session (a live one from now).")


@router.patch("/{channel_ref}")
async def update_channel(
    body: ChannelSettingsIn, channel: VisibleChannel, principal: CurrentUser, context: Context
) -> ChannelOut:
    """The owner's switches: grace period, test mode (a test stream is never "live") and
    recording."""
    changes = body.model_dump(exclude_unset=True)
    async with context.sessions() as session:
        await set_monitor_settings(session, channel_id=channel.id, actor=principal.actor, **changes)
    if changes.get("record") is not None:
        await context.control.outputs_changed(channel.id)
    return ChannelOut(**await _channel_out(context, channel))


@router.get("")
async def list_channels(principal: CurrentUser, context: Context) -> list[ChannelOut]:
    owner = None if principal.is_admin else principal.user.id
    async with context.sessions() as session:
        summaries = await credentials.list_channels(session, owner_id=owner)
    result = []
    for summary in summaries:
        info = credentials.ChannelInfo(
            id=summary.channel_id,
            public_id=summary.public_id,
            name=summary.name,
            owner_id=summary.owner_id,
            ingest_server_id=summary.ingest_server_id,
            created_at=summary.created_at,
        )
        result.append(ChannelOut(**await _channel_out(context, info)))
    return result


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_channel(
    body: ChannelCreateIn, principal: AdminUser, context: Context
) -> ChannelCreatedOut:
    owner_id = None
    if body.owner_email:
        async with context.sessions() as session:
            owner_id = (await users.find_user(session, email=body.owner_email)).id
    async with context.sessions() as session:
        created = await credentials.create_channel(
            session,
            secrets=context.secrets,
            name=body.name,
            actor=principal.actor,
            owner_id=owner_id,
        )
    async with context.sessions() as session:
        channel = await credentials.get_channel(session, created.channel_id)
    return ChannelCreatedOut(
        **await _channel_out(context, channel), key_id=created.key_id, stream_key=created.key
    )


@router.get("/{channel_ref}")
async def get_channel(channel: VisibleChannel, context: Context) -> ChannelDetailOut:
    async with context.sessions() as session:
        summaries = await credentials.list_channels(session, owner_id=channel.owner_id)
    summary = next((s for s in summaries if s.channel_id == channel.id), None)
    async with context.sessions() as session:
        masked = await credentials.key_hint(session, secrets=context.secrets, channel_id=channel.id)
    key = KeyOut(
        key_id=summary.key_id if summary else None,
        masked=masked,
        created_at=summary.key_created_at if summary else None,
        rotating_key_ids=list(summary.rotating_key_ids) if summary else [],
    )
    return ChannelDetailOut(**await _channel_out(context, channel), key=key)


@router.delete("/{channel_ref}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_channel(channel: VisibleChannel, principal: AdminUser, context: Context) -> None:
    await context.control.delete_channel(channel_id=channel.id, actor=principal.actor)


class RevealedKeyOut(BaseModel):
    key_id: str
    stream_key: str


@router.post("/{channel_ref}/key/reveal")
async def reveal_key(
    channel: VisibleChannel, principal: CurrentUser, context: Context
) -> RevealedKeyOut:
    async with context.sessions() as session:
        key = await credentials.reveal_key(
            session, secrets=context.secrets, channel_id=channel.id, actor=principal.actor
        )
    return RevealedKeyOut(key_id=key[4:16], stream_key=key)


class KeyResetOut(BaseModel):
    key_id: str
    stream_key: str
    revoked_key_ids: list[str]


@router.post("/{channel_ref}/key/reset")
async def reset_key(
    channel: VisibleChannel, principal: CurrentUser, context: Context
) -> KeyResetOut:
    """For a leaked key: the old key stops working now and a live publisher on it is cut."""
    result = await context.control.reset_key(channel_id=channel.id, actor=principal.actor)
    return KeyResetOut(
        key_id=result.key_id, stream_key=result.key, revoked_key_ids=list(result.revoked_key_ids)
    )


class KeyRotateIn(BaseModel):
    overlap_seconds: int | None = Field(
        None, ge=0, le=7 * 24 * 3600, description="How long the old key keeps working."
    )


class KeyRotateOut(BaseModel):
    key_id: str
    stream_key: str
    previous_key_id: str | None
    previous_expires_at: datetime | None


@router.post("/{channel_ref}/key/rotate")
async def rotate_key(
    channel: VisibleChannel,
    principal: CurrentUser,
    context: Context,
    body: KeyRotateIn | None = None,
) -> KeyRotateOut:
    """For a planned change: the old key keeps working until the overlap ends."""
    seconds = body.overlap_seconds if body and body.overlap_seconds is not None else None
    overlap = timedelta(
        seconds=context.settings.key_rotation_overlap if seconds is None else seconds
    )
    result = await context.control.rotate_key(
        channel_id=channel.id, actor=principal.actor, overlap=overlap
    )
    return KeyRotateOut(
        key_id=result.key_id,
        stream_key=result.key,
        previous_key_id=result.previous_key_id,
        previous_expires_at=result.previous_expires_at,
    )


@router.post("/{channel_ref}/kick", status_code=status.HTTP_202_ACCEPTED)
async def kick(channel: VisibleChannel, principal: AdminUser, context: Context) -> dict[str, str]:
    """End the live publish without changing the key; the encoder may reconnect."""
    await context.control.kick(channel_id=channel.id, actor=principal.actor)
    return {"status": "requested"}


class KeyRevokeOut(BaseModel):
    revoked_key_ids: list[str]


@router.post("/{channel_ref}/key/revoke")
async def revoke_key(
    channel: VisibleChannel, principal: CurrentUser, context: Context
) -> KeyRevokeOut:
    revoked = await context.control.revoke_keys(channel_id=channel.id, actor=principal.actor)
    return KeyRevokeOut(revoked_key_ids=list(revoked))


class SessionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    status: str
    test: bool
    key_id: str
    node: str
    remote_address: str | None
    publishes: int = Field(description="Publishes in the session: 1 + reconnects.")
    media_bytes: int
    video_frames: int
    audio_frames: int
    video_codec: str | None
    audio_codec: str | None
    encoder: str | None
    width: int | None
    height: int | None
    fps: float | None
    avg_kbps: float | None
    peak_kbps: float | None
    health_issues: list[str]
    last_update_at: datetime | None


@router.get(
    "/{channel_ref}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 304: {"description": "Not modified."}},
)
async def thumbnail(channel: VisibleChannel, context: Context, request: Request) -> Response:
    """The live stream's latest picture; asking for it keeps it coming every few seconds."""
    context.live.thumbnail_seen(channel.id)
    try:
        picture = await context.thumbnails.get(channel.id) if context.thumbnails else None
    except StateUnavailable:
        raise SharedStateUnavailable("live pictures are unavailable; try again shortly") from None
    if picture is None:
        raise NotFound("no picture of this channel yet")
    # The page asks again with the last ETag: a picture not renewed costs no bytes.
    headers = {"ETag": f'"{picture.at:.3f}"', "Cache-Control": "private, no-cache"}
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(picture.jpeg, media_type="image/jpeg", headers=headers)


PREVIEW_URL_SECONDS = 60  # to start playing; a started stream plays on
# What browsers play from FLV through Media Source Extensions (mpegts.js): H.264 video,
# AAC or MP3 audio. Enhanced RTMP's HEVC, AV1 and VP9 would fail in the player.
PREVIEW_VIDEO = frozenset({"avc1"})
PREVIEW_AUDIO = frozenset({"mp4a", ".mp3"})


@router.get(
    "/{channel_ref}/preview",
    response_class=RedirectResponse,
    status_code=status.HTTP_307_TEMPORARY_REDIRECT,
    responses={307: {"description": "To the stream as HTTP-FLV, on the node that holds it."}},
)
async def preview(channel: VisibleChannel, context: Context) -> RedirectResponse:
    """Play the live stream: a URL that holds no key and expires, on the node holding it."""
    live = context.live.live_streams().get(channel.id)
    if live is None:
        raise NotFound("the channel is not live")
    video, audio = live.codecs.get("video"), live.codecs.get("audio")
    if (video is not None and video not in PREVIEW_VIDEO) or (
        audio is not None and audio not in PREVIEW_AUDIO
    ):
        raise PreviewUnsupported(
            f"the browser preview plays H.264 with AAC or MP3; this stream is "
            f"{video or 'no video'} with {audio or 'no audio'}"
        )
    base = await _playback_base(context, channel.id, live.peer)
    until = int(time.time()) + PREVIEW_URL_SECONDS
    signature = playback_tokens.sign(context.secrets, channel.id, until)
    return RedirectResponse(
        f"{base}/play/{channel.id}.flv?until={until}&sig={signature}",
        status_code=status.HTTP_307_TEMPORARY_REDIRECT,
        headers={"Cache-Control": "no-store"},
    )


async def _playback_base(context: ApiContext, channel_id: int, node: str) -> str:
    """Where the stream plays from: this process (same origin), or its node's URL."""
    if context.playback is not None and context.playback.holds(channel_id):
        return ""
    for info in await context.nodes() if context.nodes is not None else []:
        if info.node_id == node and info.playback_url:
            return info.playback_url
    raise PreviewUnavailable("the ingest node holding this stream does not serve playback")


@router.get("/{channel_ref}/sessions")
async def list_sessions(
    channel: VisibleChannel,
    context: Context,
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, ge=1, le=2**63 - 1),
) -> list[SessionOut]:
    async with context.sessions() as session:
        rows = await history.list_sessions(
            session, channel_id=channel.id, limit=limit, before_id=before
        )
    return [SessionOut.model_validate(row) for row in rows]


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    action: str
    actor: str
    key_id: str | None
    source_address: str | None
    count: int
    details: dict[str, Any] | None


@router.get("/{channel_ref}/audit")
async def channel_audit(
    channel: VisibleChannel,
    context: Context,
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(None, ge=1, le=2**63 - 1),
) -> list[AuditOut]:
    async with context.sessions() as session:
        rows = await list_entries(session, channel_id=channel.id, limit=limit, before_id=before)
    return [AuditOut.model_validate(row) for row in rows]


class MappingIn(BaseModel):
    server: str | None = Field(None, description="Ingest server name or id; null unmaps.")


@router.put("/{channel_ref}/ingest-server")
async def map_channel(
    body: MappingIn, channel: VisibleChannel, principal: AdminUser, context: Context
) -> ChannelOut:
    server_id = None
    if body.server is not None:
        async with context.sessions() as session:
            try:
                server_id = (await servers.get_server(session, ref=body.server)).id
            except servers.ServerNotFound:
                raise NotFound("no such ingest server") from None
    async with context.sessions() as session:
        updated = await credentials.set_channel_server(
            session, channel_id=channel.id, server_id=server_id, actor=principal.actor
        )
    return ChannelOut(**await _channel_out(context, updated))
