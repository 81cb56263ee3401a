"""The stream key on the channel page: masked, revealed, copied, reset, as a streamer uses it."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import KEY, Dashboard, Server, masked_form


@pytest.mark.ffmpeg
async def test_sign_in_reveal_copy_and_reset_the_key(server: Server, dashboard: Dashboard) -> None:
    await server.create_user("streamer@example.com")
    channel = await server.create_channel("studio", owner="streamer@example.com")
    page = await dashboard.new_page()

    await dashboard.sign_in(page, "streamer@example.com")
    link = page.get_by_test_id("channel-link")
    await expect(link).to_have_text("studio")
    await expect(link).to_have_attribute("href", channel.path)
    await expect(page.locator('a[href="/admin"]')).to_have_count(0)  # not an admin
    await link.click()
    await expect(page).to_have_url(dashboard.url(channel.path))

    # Masked by default: the key is nowhere in the page, only its id and last 4 characters.
    key = page.get_by_test_id("stream-key")
    await expect(key).to_have_text(masked_form(channel.key))
    await expect(page.get_by_test_id("server-url")).to_have_text(server.rtmp_url)
    await expect(page.get_by_test_id("secure-server-url")).to_be_hidden()  # no RTMPS here
    assert channel.key not in await page.content()
    assert channel.key not in (await page.locator("html").text_content() or "")

    await page.get_by_test_id("reveal-key").click()
    await expect(key).to_have_text(channel.key)
    await page.get_by_test_id("reveal-key").click()  # a toggle: hidden again
    await expect(key).to_have_text(masked_form(channel.key))

    await page.get_by_test_id("copy-key").click()
    await expect(page.get_by_text("Copied").first).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == channel.key

    # A fresh page: copying never puts the key on screen.
    await page.reload()
    await expect(key).to_have_text(masked_form(channel.key))
    await page.evaluate("navigator.clipboard.writeText('')")
    await page.get_by_test_id("copy-key").click()
    await expect(page.get_by_text("Copied").first).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == channel.key
    await expect(key).to_have_text(masked_form(channel.key))
    assert channel.key not in await page.locator("body").inner_text()

    # Reset: a dialog to confirm, then the new key in full, once.
    await page.get_by_test_id("reset-key").click()
    dialog = page.locator("#reset-dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_test_id("confirm-reset").click()
    await expect(key).to_have_text(KEY)
    new_key = (await key.text_content() or "").strip()
    assert new_key != channel.key
    await expect(dialog).to_be_hidden()
    await page.reload()  # shown once: a fresh page masks it again
    await expect(key).to_have_text(masked_form(new_key))
    assert new_key not in await page.content()

    # The old key no longer publishes; the one the page showed does.
    start = server.mark()
    old = await server.publish(channel.key, seconds=5)
    await server.wait_for_log(rf"publish refused reason=\S+ key_id=({channel.key_id}|-)", start)
    assert await asyncio.wait_for(old.wait(), 15) != 0
    start = server.mark()
    await server.publish(new_key, seconds=30)
    await server.wait_for_log(f"publish accepted channel=studio key_id={new_key[4:16]}", start)
    dashboard.assert_clean()


async def test_a_revealed_key_hides_again_after_30_seconds(
    server: Server, dashboard: Dashboard
) -> None:
    await server.create_user("streamer@example.com")
    channel = await server.create_channel("studio", owner="streamer@example.com")
    page = await dashboard.new_page()
    await page.clock.install()  # the page's timers, fast-forwarded instead of waited for
    await dashboard.sign_in(page, "streamer@example.com")
    await page.goto(channel.path)

    key = page.get_by_test_id("stream-key")
    await page.get_by_test_id("reveal-key").click()
    await expect(key).to_have_text(channel.key)
    await page.clock.fast_forward(25_000)
    await expect(key).to_have_text(channel.key)  # still shown before the 30 s
    await page.clock.fast_forward(6_000)
    await expect(key).to_have_text(masked_form(channel.key))
    assert channel.key not in await page.content()
    dashboard.assert_clean()
