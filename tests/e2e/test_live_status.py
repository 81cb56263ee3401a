"""The channel page's live panel follows a real FFmpeg publish over the WebSocket."""

from __future__ import annotations

import re
import time

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import FPS, RESOLUTION, Dashboard, Server

pytestmark = pytest.mark.ffmpeg

RECONNECTING = re.compile(r"^\s*Reconnecting(\s*·\s*\d+\s*s)?\s*$")  # "Reconnecting · 2 s"
KBPS = re.compile(r"^\s*\d{1,3}(,\d{3})*(\.\d+)? kbps\s*$")


async def test_live_then_reconnecting_then_offline(server: Server, dashboard: Dashboard) -> None:
    await server.create_user("streamer@example.com")
    channel = await server.create_channel("studio", owner="streamer@example.com")
    await server.set_grace(channel, 2)
    page = await dashboard.new_page()
    await dashboard.sign_in(page, "streamer@example.com")
    async with page.expect_websocket():  # the panel's updates come over a WebSocket
        await page.goto(channel.path)

    status = page.get_by_test_id("stream-status")
    await expect(status).to_have_attribute("data-status", "offline")
    await expect(status).to_have_text("Offline")
    for unknown in ("bitrate", "resolution", "fps"):
        await expect(page.get_by_test_id(unknown)).to_have_text("—")

    start = server.mark()
    publisher = await server.publish(channel.key)
    await server.wait_for_log(f"publish accepted channel=studio key_id={channel.key_id}", start)
    accepted = time.monotonic()
    await expect(status).to_have_attribute("data-status", "live", timeout=1_000)
    latency = time.monotonic() - accepted
    assert latency <= 1.0, f"Live {latency:.3f} s after the publish was accepted"
    await expect(status).to_have_text("Live")

    await expect(page.get_by_test_id("resolution")).to_have_text(RESOLUTION)
    await expect(page.get_by_test_id("bitrate")).to_have_text(KBPS, timeout=10_000)
    fps = re.compile(rf"^\s*({FPS - 1}\.[5-9]|{FPS}\.[0-4])\s*$")  # "30.0", give or take
    await expect(page.get_by_test_id("fps")).to_have_text(fps, timeout=10_000)
    await expect(page.get_by_test_id("health-issues")).to_be_attached()

    # The encoder dies without a word: reconnecting for the 2 s grace, then offline.
    publisher.kill()
    await expect(status).to_have_attribute("data-status", "reconnecting")
    await expect(status).to_have_text(RECONNECTING)
    await expect(status).to_have_attribute("data-status", "offline", timeout=10_000)
    await expect(status).to_have_text("Offline")
    dashboard.assert_clean()
