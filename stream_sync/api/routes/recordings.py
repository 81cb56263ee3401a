"""A channel's recordings: listed, downloaded and deleted by its owner and admins.

A file lives on the disk of the node that wrote it. This process serves the files of
its own server (itself, or its workers: they share the data folder); another node's
are a redirect to that node's playback origin with a signed URL that expires, as the
live preview does. Someone else's channel answers 404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, Field

from ...credentials import playback as download_tokens
from ...recordings import files, rows
from ...recordings.errors import (
    RecordingFileMissing,
    RecordingInProgress,
    RecordingUnavailable,
)
from ...settings import MAX_WORKERS
from ...state.errors import StateUnavailable
from ...state.interfaces import RecordingDeleted
from ...workers import worker_node_id
from ..context import ApiContext
from ..deps import Context, CurrentUser, VisibleChannel

router = APIRouter(prefix="/api/channels", tags=["recordings"])
log = logging.getLogger("stream_sync.api")

RecordingId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
DOWNLOAD_URL_SECONDS = 60  # to start the download; a started one runs to its end


class RecordingOut(BaseModel):
    id: int
    session_id: int | None = Field(description="The publish session it records.")
    part: int = Field(description="1, 2, ...: a session past the size or duration limit.")
    status: str = Field(description="recording, complete or failed")
    started_at: datetime
    ended_at: datetime | None
    bytes: int = Field(description="The file's size once finished.")
    duration_ms: int = Field(description="Its length once finished.")
    end_reason: str | None
    node: str = Field(description="The ingest node whose disk holds the file.")
    file_name: str
    download_url: str


@router.get("/{channel_ref}/recordings")
async def list_recordings(
    channel: VisibleChannel,
    context: Context,
    limit: int = Query(50, ge=1, le=rows.MAX_PAGE),
    before: int | None = Query(None, ge=1, le=2**63 - 1),
) -> list[RecordingOut]:
    """Newest first; the next page is ``before=<the last id>``."""
    async with context.sessions() as session:
        found = await rows.list_recordings(
            session, channel_id=channel.id, limit=limit, before_id=before
        )
    return [_out(channel.public_id, info) for info in found]


@router.get(
    "/{channel_ref}/recordings/{recording_id}/download",
    response_class=Response,
    responses={
        200: {"content": {"video/x-flv": {}}, "description": "The file, as an attachment."},
        307: {"description": "To the node that holds the file, with a signed URL."},
    },
)
async def download_recording(
    recording_id: RecordingId, channel: VisibleChannel, context: Context
) -> Response:
    async with context.sessions() as session:
        info = await rows.get_recording(session, channel_id=channel.id, recording_id=recording_id)
    if info.status == rows.RecordingStatus.RECORDING:  # still growing: no length to send yet
        raise RecordingInProgress("this recording is still being written; download it once it ends")
    if _here(context, info.node):
        try:
            path = files.resolve(context.settings.recordings_path(), info.path)
        except files.UnsafePath:
            raise RecordingFileMissing("this recording's file is not where it should be") from None
        if not await asyncio.to_thread(path.is_file):
            raise RecordingFileMissing("this recording's file is gone")
        return FileResponse(
            path,
            media_type="video/x-flv",
            filename=path.name,
            headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
        )
    base = await _node_origin(context, info.node)
    until = int(time.time()) + DOWNLOAD_URL_SECONDS
    signature = download_tokens.sign_download(context.secrets, info.path, until)
    return RedirectResponse(
        f"{base}/recordings/{info.path}?until={until}&sig={signature}",
        status_code=status.HTTP_307_TEMPORARY_REDIRECT,
        headers={"Cache-Control": "no-store"},
    )


@router.delete("/{channel_ref}/recordings/{recording_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_recording(
    recording_id: RecordingId, channel: VisibleChannel, principal: CurrentUser, context: Context
) -> None:
    """The row goes with its audit row; then the file, here or by its node."""
    async with context.sessions() as session:
        info = await rows.delete_recording(
            session, channel_id=channel.id, recording_id=recording_id, actor=principal.actor
        )
    if _here(context, info.node):
        folder = context.settings.recordings_path()
        try:
            await asyncio.to_thread(files.delete, folder, info.path)
        except (OSError, files.UnsafePath) as exc:
            log.warning("recording %d: file not deleted (%s)", info.id, type(exc).__name__)
        return
    bus = context.control.bus
    if bus is not None:  # a node that misses it deletes the file when it expires
        with contextlib.suppress(StateUnavailable):
            await bus.publish(RecordingDeleted(info.node, info.path))


def _out(channel_ref: str, info: rows.RecordingInfo) -> RecordingOut:
    return RecordingOut(
        id=info.id,
        session_id=info.session_id,
        part=info.part,
        status=info.status,
        started_at=info.started_at,
        ended_at=info.ended_at,
        bytes=info.bytes,
        duration_ms=info.duration_ms,
        end_reason=info.end_reason,
        node=info.node,
        file_name=PurePosixPath(info.path).name,
        download_url=f"/api/channels/{channel_ref}/recordings/{info.id}/download",
    )


def _here(context: ApiContext, node: str) -> bool:
    """Whether this process can read the node's files: its own server's, which share
    the data folder (a single process, or `--workers` under this supervisor)."""
    server = context.settings.server_name
    return node == server or any(
        node == worker_node_id(server, index) for index in range(1, MAX_WORKERS + 1)
    )


async def _node_origin(context: ApiContext, node: str) -> str:
    for info in await context.nodes() if context.nodes is not None else []:
        if info.node_id == node and info.playback_url:
            return info.playback_url
    raise RecordingUnavailable(
        f"the ingest node {node} that holds this recording is not running; try again later"
    )
