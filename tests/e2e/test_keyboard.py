"""The dashboard without a mouse: Tab, typing and Enter reach and use everything."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.e2e.conftest import PASSWORD, Dashboard, Server, masked_form

MOST_TABS = 40  # more stops than that before a control is a failure in itself


async def tab_to(page: Page, test_id: str) -> None:
    """Press Tab until the element with this data-testid has the focus."""
    selector = f'[data-testid="{test_id}"]'
    for _ in range(MOST_TABS):
        if await page.evaluate("s => document.activeElement?.matches(s) ?? false", selector):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"{MOST_TABS} presses of Tab never reached {selector}")


async def test_sign_in_and_reveal_by_keyboard(server: Server, dashboard: Dashboard) -> None:
    await server.create_user("streamer@example.com")
    channel = await server.create_channel("studio", owner="streamer@example.com")
    page = await dashboard.new_page()
    await page.goto("/login")

    await tab_to(page, "login-email")
    await page.keyboard.type("streamer@example.com")
    await page.keyboard.press("Tab")
    await expect(page.get_by_test_id("login-password")).to_be_focused()
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(dashboard.url("/"))

    await tab_to(page, "channel-link")
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(dashboard.url(channel.path))

    key = page.get_by_test_id("stream-key")
    await expect(key).to_have_text(masked_form(channel.key))
    await tab_to(page, "reveal-key")
    await page.keyboard.press("Enter")
    await expect(key).to_have_text(channel.key)
    await expect(page.get_by_test_id("reveal-key")).to_be_focused()  # focus stays put
    await page.keyboard.press("Enter")
    await expect(key).to_have_text(masked_form(channel.key))
    dashboard.assert_clean()
