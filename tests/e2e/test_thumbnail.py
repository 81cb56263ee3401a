"""The live picture on the channel page and the admin overview, from a real FFmpeg
stream of a moving test pattern, in Chromium: shown soon after going live, renewed
every few seconds while the page is open (the default settings)."""

from __future__ import annotations

import pytest
from playwright.async_api import Locator, Page, expect

from tests.e2e.conftest import WIDTH, Dashboard, Server

pytestmark = pytest.mark.ffmpeg

RENEWED_WITHIN = 15_000  # ms: thumbnail_watched_interval (5 s) plus a 2 s keyframe interval, twice


async def loaded(page: Page, picture: Locator) -> bytes:
    """What the page shows once the picture in ``src`` has loaded: a screenshot of it."""
    await page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=await picture.element_handle()
    )
    return await picture.screenshot()


async def test_the_channel_page_shows_the_stream_moving(
    server: Server, dashboard: Dashboard
) -> None:
    channel, page = await dashboard.owner_on_channel_page()
    picture = page.get_by_test_id("thumbnail")
    await expect(picture).to_be_hidden()  # offline: no picture

    publisher = await server.publish(channel.key)
    await expect(picture).to_be_visible(timeout=10_000)
    first = await picture.get_attribute("src")
    assert first is not None
    shown = await loaded(page, picture)
    assert await picture.evaluate("img => img.naturalWidth") == min(320, WIDTH)

    await expect(picture).not_to_have_attribute("src", first, timeout=RENEWED_WITHIN)
    await expect(picture).to_be_visible()
    assert await loaded(page, picture) != shown  # the pattern moved: a new picture on screen

    publisher.kill()
    await expect(page.get_by_test_id("stream-status")).to_have_attribute(
        "data-status", "reconnecting"
    )
    dashboard.assert_clean()


async def test_the_admin_overview_renews_live_pictures(
    server: Server, dashboard: Dashboard
) -> None:
    await server.create_user("root@example.com", admin=True)
    await server.create_user("streamer@example.com")
    channel = await server.create_channel("studio", owner="streamer@example.com")
    start = server.mark()
    await server.publish(channel.key)
    await server.wait_for_log("channel=studio status=live", start)
    # The overview may load before the first picture is made: that one load is a 404.
    dashboard.allow_failed_load(404, f"/api/channels/{channel.public_id}/thumbnail")
    page = await dashboard.new_page()
    await dashboard.sign_in(page, "root@example.com")
    await page.goto("/admin")

    picture = page.get_by_test_id("live-thumbnail")
    handle = await picture.element_handle()
    # The page asks again every few seconds; the first answer with a picture shows it.
    await page.wait_for_function(
        "img => img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0",
        arg=handle,
        timeout=RENEWED_WITHIN,
    )
    shown = await picture.get_attribute("src")
    assert shown is not None
    await expect(picture).not_to_have_attribute("src", shown, timeout=RENEWED_WITHIN)
    await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=handle)
    dashboard.assert_clean()
