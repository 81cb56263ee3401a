"""After a network drop the channel page reconnects by itself and catches up.

The browser reaches the server through a TCP relay the test controls: cutting it
drops the page's WebSocket (and refuses new connections) while the channel goes
live; restoring it must bring the page to Live without a reload.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import PASSWORD, RESOLUTION, Dashboard, Server
from tests.support import Relay

pytestmark = pytest.mark.ffmpeg


@pytest.fixture
async def relay(server: Server) -> AsyncIterator[Relay]:
    async with Relay(urlsplit(server.http_url).port or 80) as running:
        yield running


async def test_the_page_catches_up_after_a_network_drop(
    server: Server, dashboard: Dashboard, relay: Relay
) -> None:
    await server.create_user("streamer@example.com")
    channel = await server.create_channel("studio", owner="streamer@example.com")
    base = f"http://127.0.0.1:{relay.port}"
    context = await dashboard.browser.new_context(base_url=base)
    context.on("page", dashboard._watch)
    page = await context.new_page()
    await page.goto("/login")
    await page.get_by_test_id("login-email").fill("streamer@example.com")
    await page.get_by_test_id("login-password").fill(PASSWORD)
    await page.get_by_test_id("login-submit").click()
    await expect(page).to_have_url(f"{base}/")
    await page.goto(channel.path)
    status = page.get_by_test_id("stream-status")
    await expect(status).to_have_attribute("data-status", "offline")

    relay.cut()  # the network goes away; the page says so
    await expect(page.locator("#socket-state")).to_have_text("Connection lost, reconnecting…")
    start = server.mark()
    await server.publish(channel.key)
    await server.wait_for_log("channel=studio status=live", start)
    await expect(status).to_have_attribute("data-status", "offline")  # it cannot know yet

    relay.restore()  # back: the page reconnects and its snapshot says Live
    await expect(status).to_have_attribute("data-status", "live", timeout=15_000)
    await expect(page.locator("#socket-state")).to_have_text("")
    await expect(page.get_by_test_id("resolution")).to_have_text(RESOLUTION, timeout=10_000)
    # Failed reconnection attempts are logged by Chromium while the network is down;
    # nothing may have thrown in the page.
    assert [error for error in dashboard.errors if error.startswith("page error")] == []
