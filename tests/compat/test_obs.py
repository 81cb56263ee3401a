"""OBS Studio as influencers run it: a profile, Go Live, and the dashboard's view of it.

OBS 29 (Debian) sends H.264 and AAC. Each test reads what it needs through the HTTP API
as the dashboard does, and OBS's own log for what the streamer would have seen.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.db.models import Role
from stream_sync.node import Node
from stream_sync.state.interfaces import PublishEnded, PublishStarted
from tests.compat.obs import ObsProfile, ObsRun, obs_binaries, obs_version, run_obs
from tests.compat.report import Row
from tests.support import BusRecorder

LIVE_FOR = 10.0  # seconds OBS streams before the test looks back
PASSWORD = "the operator's passphrase"
# What OBS logs when a stream it had started breaks (obs-outputs, rtmp-stream.c).
TROUBLE = ("Disconnected", "Reconnecting", "Reconnect", "failed", "Encoding overloaded")


@pytest.fixture
async def admin(node: Node, certificate: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An admin's API session over HTTPS (the node has a certificate, so it serves TLS)."""
    await node.control.create_user(
        email="admin@example.com", password=PASSWORD, role=Role.ADMIN, actor=Actor.cli()
    )
    base = f"https://127.0.0.1:{node.http_port}"
    async with httpx.AsyncClient(
        base_url=base, verify=ssl.create_default_context(cafile=certificate)
    ) as client:
        response = await client.post(
            "/api/auth/login", json={"email": "admin@example.com", "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
        yield client


async def live_detail(
    api: httpx.AsyncClient, channel: str, ready: Any, timeout: float = 20
) -> dict[str, Any]:
    """The channel as the dashboard reads it, once ``ready(detail)`` holds."""
    async with asyncio.timeout(timeout):
        while True:
            response = await api.get(f"/api/channels/{channel}")
            assert response.status_code == 200, response.text
            detail: dict[str, Any] = response.json()
            if ready(detail):
                return detail
            await asyncio.sleep(0.2)


def measured(detail: dict[str, Any]) -> dict[str, Any]:
    stats: dict[str, Any] = detail.get("stats") or {}
    return stats.get("measurements") or {}


def troubles(run: ObsRun) -> list[str]:
    return [
        line
        for line in run.log().splitlines()
        if "rtmp stream" in line and any(word in line for word in TROUBLE)
    ]


def server_url(node: Node, transport: str) -> str:
    """localhost, since OBS's TLS matches only DNS names in a certificate."""
    port = node.rtmps_port if transport == "rtmps" else node.rtmp_port
    return f"{transport}://localhost:{port}/live"


@pytest.mark.parametrize("transport", ["rtmp", "rtmps"])
async def test_obs_goes_live(
    node: Node,
    channel: service.CreatedChannel,
    bus: BusRecorder,
    admin: httpx.AsyncClient,
    row: Row,
    certificate: Path,
    tmp_path: Path,
    transport: str,
) -> None:
    obs, _ = obs_binaries()
    row.describe("OBS Studio", obs_version(obs), transport.upper(), "H.264/AAC (x264)")
    profile = ObsProfile(server=server_url(node, transport), key=channel.key)
    trust = certificate if transport == "rtmps" else None
    async with run_obs(tmp_path, profile, trust=trust) as run:
        started = await bus.wait_for(PublishStarted, timeout=30)
        began = time.monotonic()
        detail = await live_detail(
            admin,
            "demo",
            lambda d: d["status"] == "live" and (measured(d).get("fps") or 0) > 0,
        )
        await asyncio.sleep(max(0.0, LIVE_FOR - (time.monotonic() - began)))
        detail = await live_detail(admin, "demo", lambda d: d["status"] == "live")
        assert not bus.of(PublishEnded)
        assert troubles(run) == [], run.log()
        assert "==== Streaming Start" in run.log()
    assert started.channel_id == channel.channel_id
    stats = detail["stats"]
    video = measured(detail)["video"]
    assert (video["width"], video["height"]) == (profile.width, profile.height), detail
    assert abs(measured(detail)["fps"] - profile.fps) <= 1.5, detail
    assert stats["codecs"] == {"video": "avc1", "audio": "mp4a"}
    row.result = (
        f"works ({LIVE_FOR:.0f} s live, {video['width']}x{video['height']} at "
        f"{measured(detail)['fps']:.0f} fps as the profile set)"
    )


async def test_obs_reconnects_after_a_kick_into_the_same_session(
    node: Node,
    channel: service.CreatedChannel,
    bus: BusRecorder,
    admin: httpx.AsyncClient,
    row: Row,
    tmp_path: Path,
) -> None:
    """A kick leaves the key valid: OBS retries after its delay and the session goes on."""
    obs, _ = obs_binaries()
    row.describe("OBS Studio", obs_version(obs), "RTMP", "H.264/AAC, kicked by an admin")
    profile = ObsProfile(server=server_url(node, "rtmp"), key=channel.key, retry_delay=2)
    async with run_obs(tmp_path, profile) as run:
        first = await bus.wait_for(PublishStarted, timeout=30)
        kicked = await admin.post("/api/channels/demo/kick")
        assert kicked.status_code == 202, kicked.text
        ended = await bus.wait_for(PublishEnded)
        cut = time.monotonic()
        again = await bus.wait_for(PublishStarted, lambda e: e.connection_id != first.connection_id)
        back_after = time.monotonic() - cut
        detail = await live_detail(admin, "demo", lambda d: d["status"] == "live")
        await run.wait_for_log(r"(?s)Connection to \S+ successful.*Connection to \S+ successful", 5)
        assert f"Reconnecting in {profile.retry_delay:.2f} seconds" in run.log()
    assert ended.session_id == first.session_id
    assert again.session_id == first.session_id  # the same session, not a new one
    assert detail["session_id"] == first.session_id, detail
    assert profile.retry_delay - 0.5 <= back_after <= profile.retry_delay + 5
    sessions = (await admin.get("/api/channels/demo/sessions")).json()
    assert len(sessions) == 1, sessions
    row.result = (
        f"works: ended as {ended.reason!r}, OBS back after {back_after:.1f} s "
        f"(its retry delay: {profile.retry_delay} s), same session"
    )
