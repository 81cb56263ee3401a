"""The owner adds a destination on the channel page and sees it go live with the stream."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import Dashboard, Server
from tests.integration.test_relay import nginx_recording

pytestmark = pytest.mark.ffmpeg

PLATFORM_KEY = "cast-2k9f-77qa-x1z0-4821"


async def test_a_destination_is_added_goes_live_and_is_removed(
    server: Server, dashboard: Dashboard, tmp_path: Path
) -> None:
    async with nginx_recording(tmp_path / "nginx") as (port, recordings):
        channel, page = await dashboard.owner_on_channel_page()
        form = page.locator("#push-form")
        await form.get_by_label("Name").fill("Backup")
        await form.get_by_label("Server").fill(f"rtmp://127.0.0.1:{port}/live/")
        await form.get_by_label("Stream key").fill(PLATFORM_KEY)
        await page.get_by_test_id("add-push-target").click()

        row = page.get_by_test_id("push-targets").locator("tbody tr")
        await expect(row).to_have_count(1)
        await expect(row.locator("td").nth(1)).to_have_text(f"rtmp://127.0.0.1:{port}/live")
        await expect(row.locator("td").nth(2)).to_have_text("••••4821")
        await expect(row.locator(".badge")).to_have_text("Idle")
        await expect(form.get_by_label("Stream key")).to_have_value("")  # not kept in the page

        encoder = await server.publish(channel.key, seconds=60)
        await expect(row.locator(".badge")).to_have_text("Live", timeout=15_000)
        outgoing = re.compile(r"^[1-9][\d,]* kbps$")  # bytes going out, measured each second
        await expect(row.locator("td").nth(4)).to_have_text(outgoing, timeout=5_000)
        assert PLATFORM_KEY not in await page.content()

        await row.get_by_role("checkbox").uncheck()  # off: the push ends at once
        await expect(row.locator(".badge")).to_have_text("Off")
        page.once("dialog", lambda dialog: dialog.accept())
        await row.get_by_role("button", name="Remove").click()
        await expect(page.get_by_test_id("push-targets")).to_contain_text("No destinations yet.")
        encoder.kill()
        await encoder.wait()
        dashboard.assert_clean()
    assert (recordings / f"{PLATFORM_KEY}.flv").stat().st_size > 10_000  # nginx got media
