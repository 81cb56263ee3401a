"""`GET /play/<channel id>.flv?until=...&sig=...`: a live stream as HTTP-FLV, and
`GET /recordings/<path>?until=...&sig=...`: a recording's file, as a download.

Served by the process that holds the stream (or wrote the file): mounted in the API
app when ingest runs in the same process (`serve`), or on its own port by an
ingest-only process. The signed URL (credentials/playback.py) is the whole
authorisation, so any origin may fetch it (CORS `*`), and nothing here reads a
cookie or the database.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..credentials import playback as tokens
from ..credentials.server_secrets import ServerSecrets
from ..recordings import files
from .playback import PlaybackHub, PlaybackRefused

HEADERS = {
    "Cache-Control": "no-store",
    "Access-Control-Allow-Origin": "*",
    "X-Content-Type-Options": "nosniff",
}


def playback_route(hub: PlaybackHub, secrets: ServerSecrets) -> Route:
    async def play(request: Request) -> Response:
        channel_id: int = request.path_params["channel_id"]
        until, signature = request.query_params.get("until", ""), request.query_params.get("sig")
        if not (until.isdigit() and len(until) <= 12 and signature):
            return _refusal(403, "this playback URL is not valid")
        if not tokens.verify(secrets, channel_id, int(until), signature, time.time()):
            return _refusal(403, "this playback URL is not valid or has expired")
        try:
            reader = hub.open(channel_id)
        except PlaybackRefused as exc:
            return _refusal(exc.status, str(exc))

        async def body() -> AsyncIterator[bytes]:
            try:
                async for data in reader.chunks():
                    yield data
            finally:  # the viewer left (Starlette cancels us) or the stream ended
                hub.close(reader)

        return StreamingResponse(body(), media_type="video/x-flv", headers=HEADERS)

    return Route("/play/{channel_id:int}.flv", play, methods=["GET"])


def recording_route(folder: Path, secrets: ServerSecrets) -> Route:
    """A recording this node wrote, for a URL the API signed (the file lives here only)."""

    async def download(request: Request) -> Response:
        path = f"{request.path_params['channel_id']}/{request.path_params['name']}"
        until, signature = request.query_params.get("until", ""), request.query_params.get("sig")
        if not (until.isdigit() and len(until) <= 12 and signature):
            return _refusal(403, "this download URL is not valid")
        if not tokens.verify_download(secrets, path, int(until), signature, time.time()):
            return _refusal(403, "this download URL is not valid or has expired")
        try:
            file = files.resolve(folder, path)
        except files.UnsafePath:
            return _refusal(404, "no such recording")
        if not file.is_file():
            return _refusal(404, "the recording's file is gone")
        return FileResponse(
            file, media_type="video/x-flv", filename=file.name, headers=DOWNLOAD_HEADERS
        )

    return Route("/recordings/{channel_id:int}/{name}", download, methods=["GET"])


DOWNLOAD_HEADERS = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}


def playback_app(
    hub: PlaybackHub, secrets: ServerSecrets, recordings: Path | None = None
) -> Starlette:
    """The routes alone, for an ingest-only process's own port."""
    routes = [playback_route(hub, secrets)]
    if recordings is not None:
        routes.append(recording_route(recordings, secrets))
    return Starlette(routes=routes)


def _refusal(status: int, message: str) -> Response:
    return PlainTextResponse(message + "\n", status_code=status, headers=HEADERS)
