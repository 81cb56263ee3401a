"""The owner records a stream from the channel page: the Record switch, a real FFmpeg
publish, the finished recording in the Recordings list, its Download link returning
the file (which FFmpeg plays), and Delete."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import Dashboard, Server
from tests.support import decode_errors, probe_file

pytestmark = pytest.mark.ffmpeg

SECONDS = 6


async def test_the_owner_records_a_stream_and_downloads_it(
    server: Server, dashboard: Dashboard, tmp_path: Path
) -> None:
    channel, page = await dashboard.owner_on_channel_page()
    switch = page.get_by_test_id("record-switch")
    await expect(switch).not_to_be_checked()
    await expect(page.locator("#recordings-empty")).to_be_visible()
    await switch.check()
    await expect(page.locator("#record-note")).to_contain_text("Recording is on")
    await page.reload()
    await expect(switch).to_be_checked()  # saved, not just ticked

    start = server.mark()
    encoder = await server.publish(channel.key, seconds=SECONDS)
    assert await encoder.wait() == 0
    await server.wait_for_log(r"recording part 1 ended \(stream ended\)", start)

    listed = page.get_by_test_id("recordings").locator("tbody tr")
    await expect(listed).to_have_count(1, timeout=15_000)  # the list refreshes by itself
    row = listed.first
    await expect(row).to_have_attribute("data-status", "complete", timeout=15_000)
    await expect(row.locator(".badge")).to_have_text("Complete")
    await expect(page.locator("#recordings-empty")).to_be_hidden()

    async with page.expect_download() as started:
        await row.get_by_test_id("download-recording").click()
    download = await started.value
    assert download.suggested_filename.startswith(f"{channel.name}-")
    assert download.suggested_filename.endswith("-p1.flv")
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    assert saved.read_bytes()[:3] == b"FLV"
    codecs, duration = probe_file(saved)
    assert codecs == ["aac", "h264"]
    assert SECONDS - 2.5 <= duration <= SECONDS + 0.1  # keyframes every 2 s
    assert decode_errors(saved) == ""
    await expect(row.locator("td").nth(1)).to_have_text(f"0:0{round(duration)}")

    await row.get_by_role("button", name="Delete").click()
    await page.get_by_test_id("confirm-delete-recording").click()
    await expect(listed).to_have_count(0)
    await expect(page.locator("#recordings-empty")).to_be_visible()
    assert list((server.data_dir / "recordings").rglob("*.flv")) == []
    dashboard.assert_clean()
