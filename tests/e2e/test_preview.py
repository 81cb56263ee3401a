"""The owner watches the live stream on the channel page: HTTP-FLV through mpegts.js in
Chromium, from a real FFmpeg publish; the video element's clock must advance."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import Dashboard, Server

pytestmark = pytest.mark.ffmpeg


async def test_the_owner_watches_the_stream_play(server: Server, dashboard: Dashboard) -> None:
    channel, page = await dashboard.owner_on_channel_page()
    watch = page.get_by_test_id("watch")
    await expect(watch).to_be_hidden()  # offline: nothing to watch

    await server.publish(channel.key)
    await expect(watch).to_be_visible(timeout=10_000)
    start = server.mark()
    await watch.click()
    await server.wait_for_log(r"playback viewer joined, 1 watching", start)
    player = page.get_by_test_id("player")
    await expect(player).to_be_visible()
    await expect(watch).to_have_text("Stop watching")
    handle = await player.element_handle()
    # Playing: the clock passes two seconds of the stream and frames were drawn.
    await page.wait_for_function(
        "video => !video.paused && video.currentTime > 2 && video.videoWidth > 0",
        arg=handle,
        timeout=15_000,
    )
    started = await player.evaluate("video => video.currentTime")
    await page.wait_for_function(
        "([video, t]) => video.currentTime > t + 1", arg=[handle, started], timeout=5_000
    )

    await watch.click()  # stop: the player goes, and the server lets the viewer go
    await expect(player).to_be_hidden()
    await expect(watch).to_have_text("Watch live")
    await server.wait_for_log(r"playback viewer left \(closed\), 0 watching", start)
    dashboard.assert_clean()
