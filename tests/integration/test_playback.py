"""The owner's playback preview: a real FFmpeg stream played back as HTTP-FLV through
the API's expiring redirect, checked with ffprobe and FFmpeg's decoder."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from stream_sync.audit import Actor
from stream_sync.credentials import playback as tokens
from stream_sync.db.models import Role
from stream_sync.ingest.playback import PlaybackLimits
from stream_sync.node import Node
from stream_sync.rtmp.flvfile import read_tags
from stream_sync.state.interfaces import PublishEnded, PublishStarted, StreamStats
from tests.support import BusRecorder, debian_ffmpeg, ffmpeg_command, run_process

pytestmark = pytest.mark.ffmpeg

PASSWORD = "a playback test passphrase"


async def signed_in(node: Node, email: str, role: Role = Role.STREAMER) -> httpx.AsyncClient:
    await node.control.create_user(email=email, password=PASSWORD, role=role, actor=Actor.cli())
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}")
    login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    return client


async def owned_channel(node: Node, owner: str) -> dict[str, str]:
    """A channel the admin creates for owner: its public id and stream key."""
    admin = await signed_in(node, "root@example.com", Role.ADMIN)
    created = await admin.post("/api/channels", json={"name": "olga", "owner_email": owner})
    await admin.aclose()
    assert created.status_code == 201, created.text
    return dict(created.json())


@contextlib.asynccontextmanager
async def live(node: Node, bus: BusRecorder, key: str, seconds: float) -> AsyncIterator[None]:
    """FFmpeg publishing the moving test pattern, live once its first statistics are in."""
    proc = await run_process(
        ffmpeg_command(debian_ffmpeg(), f"{node.rtmp_url}/{key}", seconds=seconds)
    )
    try:
        started = await bus.wait_for(PublishStarted)
        await bus.wait_for(StreamStats, lambda s: s.channel_id == started.channel_id)
        yield
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def probe(path: Path) -> list[str]:
    out = subprocess.run(
        [debian_ffmpeg().replace("ffmpeg", "ffprobe"), "-v", "error", "-show_entries",
         "stream=codec_name,width,height", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sorted(out.stdout.split())


async def test_the_owner_plays_the_live_stream_through_an_expiring_url(
    node: Node, bus: BusRecorder, tmp_path: Path
) -> None:
    owner = await signed_in(node, "olga@example.com")
    stranger = await signed_in(node, "mallory@example.com")
    created = await owned_channel(node, "olga@example.com")
    preview = f"/api/channels/{created['id']}/preview"
    assert (await owner.get(preview)).status_code == 404  # not live yet

    async with live(node, bus, created["stream_key"], seconds=20):
        assert (await stranger.get(preview)).status_code == 404  # someone else's channel
        redirect = await owner.get(preview)
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert created["stream_key"] not in location
        query = parse_qs(urlsplit(location).query)
        assert 0 < int(query["until"][0]) - time.time() <= 60  # it expires

        recording = tmp_path / "preview.flv"
        async with owner.stream("GET", preview, follow_redirects=True) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "video/x-flv"
            with recording.open("wb") as out:
                started = time.monotonic()
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                    if time.monotonic() - started > 3:
                        break
        playback = node.ingest.playback
        await bus.until(lambda: playback.readers() == 0)  # the viewer left: delivery off
        publisher = next(iter(node.ingest.publishers.values()))
        assert publisher.broadcast is None
        assert not publisher.conn.collect_media

    assert probe(recording) == ["aac", "h264,320,240"]
    decode = await run_process(
        [debian_ffmpeg(), "-v", "error", "-xerror", "-i", str(recording), "-f", "null", "-"]
    )
    _, errors = await decode.communicate()
    assert decode.returncode == 0, errors.decode()
    await owner.aclose()
    await stranger.aclose()


async def test_a_forged_or_expired_url_plays_nothing(node: Node, bus: BusRecorder) -> None:
    owner = await signed_in(node, "olga@example.com")
    created = await owned_channel(node, "olga@example.com")
    async with live(node, bus, created["stream_key"], seconds=20):
        channel_id = (await bus.wait_for(PublishStarted)).channel_id
        secrets = node.store.secrets
        now = int(time.time())
        good = tokens.sign(secrets, channel_id, now + 30)
        for until, sig in [
            (now - 1, tokens.sign(secrets, channel_id, now - 1)),  # expired
            (now + 30, tokens.sign(secrets, channel_id + 1, now + 30)),  # another channel's
            (now + 3600, good),  # a later deadline than was signed
            (now + 30, good[:-1] + ("A" if good[-1] != "A" else "B")),
            (now + 30, ""),
        ]:
            response = await owner.get(f"/play/{channel_id}.flv?until={until}&sig={sig}")
            assert response.status_code == 403, (until, sig)
        assert (await owner.get(f"/play/{channel_id + 99}.flv")).status_code == 403
        missing = tokens.sign(secrets, channel_id + 99, now + 30)
        not_here = await owner.get(f"/play/{channel_id + 99}.flv?until={now + 30}&sig={missing}")
        assert not_here.status_code == 404
    await owner.aclose()


async def test_a_viewer_that_stops_reading_is_dropped_and_nobody_else_notices(
    node: Node, bus: BusRecorder
) -> None:
    owner = await signed_in(node, "olga@example.com")
    created = await owned_channel(node, "olga@example.com")
    seconds = 6
    async with live(node, bus, created["stream_key"], seconds=seconds):
        channel_id = (await bus.wait_for(PublishStarted)).channel_id
        playback = node.ingest.playback
        playback.limits = PlaybackLimits(queue_bytes=64 * 1024)
        stalled = playback.open(channel_id)  # opened, never read
        reading = playback.open(channel_id)
        received = 0

        async def read() -> None:
            nonlocal received
            async for chunk in reading.chunks():
                received += len(chunk)

        reader_task = asyncio.create_task(read())
        ended = await bus.wait_for(PublishEnded, timeout=seconds + 10)
        await asyncio.wait_for(reader_task, 5)  # the stream's end ends the response

    assert stalled.ended == "fell behind"
    assert reading.ended == "the stream ended"
    assert received > 200_000  # kept up with ~300 kbit/s for most of the stream
    assert ended.reason == "client stopped (FCUnpublish)"
    assert abs(ended.video_frames - seconds * 15) <= 1  # the publish lost nothing
    await owner.aclose()


async def test_a_later_viewer_starts_at_once_with_the_kept_gop(
    node: Node, bus: BusRecorder
) -> None:
    owner = await signed_in(node, "olga@example.com")
    created = await owned_channel(node, "olga@example.com")
    async with live(node, bus, created["stream_key"], seconds=20):
        channel_id = (await bus.wait_for(PublishStarted)).channel_id
        playback = node.ingest.playback
        first = playback.open(channel_id)
        chunks = first.chunks()
        seen = await anext(chunks)  # the header and records come at once
        while not any(  # the first viewer waits for a keyframe, and the GOP starts there
            kind == 9 and body[:2] == b"\x17\x01" for kind, _, body in read_tags(seen)
        ):
            seen += await anext(chunks)
        later = playback.open(channel_id)
        start = await anext(later.chunks())  # already queued: no waiting for a keyframe
        playback.close(first)
        playback.close(later)
    kinds = [(kind, body[:2]) for kind, _, body in read_tags(start)]
    assert kinds[:3] == [(18, b"\x02\x00"), (9, b"\x17\x00"), (8, b"\xaf\x00")]  # meta, records
    assert kinds[3] == (9, b"\x17\x01")  # then the GOP, from its keyframe, at time 0
    assert read_tags(start)[3][1] == 0
    await owner.aclose()
