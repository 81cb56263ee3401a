"""Screenshots of the main pages, as a streamer and an admin see them, on a real stream.

Into $STREAM_SYNC_SCREENSHOTS when set (`make screenshots` writes docs/screenshots),
else into the test's temporary folder, so a normal run leaves the checkout alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import RESOLUTION, Dashboard, Server

pytestmark = pytest.mark.ffmpeg

PHONE = {"width": 390, "height": 844}


@pytest.mark.timeout(180)
async def test_screenshots_of_the_main_pages(
    server: Server, dashboard: Dashboard, screenshots: Path
) -> None:
    await server.create_user("ops@example.com", admin=True)
    await server.create_user("streamer@example.com")
    channel = await server.create_channel("studio", owner="streamer@example.com")
    await server.create_channel("backstage", owner="ops@example.com")
    context = await dashboard.new_context(viewport={"width": 1280, "height": 800})
    page = await dashboard.new_page(context)

    await page.goto("/login")
    await expect(page.get_by_test_id("login-submit")).to_be_visible()
    await page.screenshot(path=screenshots / "login.png", full_page=True)

    await dashboard.sign_in(page, "ops@example.com")
    await expect(page.get_by_test_id("channel-link").first).to_be_visible()
    await page.screenshot(path=screenshots / "channels.png", full_page=True)

    # One finished session for the history, then the stream the live pages show.
    start = server.mark()
    earlier = await server.publish(channel.key, seconds=4)
    assert await earlier.wait() == 0
    await server.wait_for_log(r"channel=studio status=offline reason='stopped'", start)
    start = server.mark()
    await server.publish(channel.key, seconds=90)
    await server.wait_for_log(f"publish accepted channel=studio key_id={channel.key_id}", start)
    await page.goto(channel.path)
    await expect(page.get_by_test_id("stream-status")).to_have_attribute("data-status", "live")
    await expect(page.get_by_test_id("resolution")).to_have_text(RESOLUTION)
    kbps = re.compile(r"\d kbps")
    await expect(page.get_by_test_id("bitrate")).to_have_text(kbps, timeout=10_000)
    await expect(page.get_by_test_id("fps")).to_have_text(re.compile(r"\d"), timeout=10_000)
    await page.screenshot(path=screenshots / "channel-live.png", full_page=True)

    await page.goto(f"{channel.path}/sessions")
    await expect(page.locator("tr[data-session-id]")).to_have_count(2)
    await page.screenshot(path=screenshots / "sessions.png", full_page=True)

    await page.goto("/admin")
    await expect(page.locator("body")).to_contain_text("studio")
    await expect(page.locator("body")).to_contain_text("backstage")
    await page.screenshot(path=screenshots / "admin.png", full_page=True)

    phone = await dashboard.new_context(
        viewport=PHONE,
        device_scale_factor=3,
        is_mobile=True,
        has_touch=True,
        storage_state=await context.storage_state(),
    )
    small = await dashboard.new_page(phone)
    await small.goto(channel.path)
    await expect(small.get_by_test_id("stream-status")).to_have_attribute("data-status", "live")
    await expect(small.get_by_test_id("bitrate")).to_have_text(kbps, timeout=10_000)
    await small.screenshot(path=screenshots / "channel-phone.png", full_page=True)
    width = await small.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the phone page scrolls sideways: {width}px wide"

    for name in ("login", "channels", "channel-live", "sessions", "admin", "channel-phone"):
        assert (screenshots / f"{name}.png").stat().st_size > 0
    dashboard.assert_clean()
