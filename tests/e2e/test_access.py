"""Who sees what: signed-out visitors go to /login, nobody reaches someone else's channel."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import Dashboard, Server


async def test_another_users_channel_is_not_found(server: Server, dashboard: Dashboard) -> None:
    await server.create_user("alice@example.com")
    await server.create_user("bob@example.com")
    alices = await server.create_channel("alpha", owner="alice@example.com")
    await server.create_channel("bravo", owner="bob@example.com")
    page = await dashboard.new_page()
    await dashboard.sign_in(page, "bob@example.com")

    links = page.get_by_test_id("channel-link")
    await expect(links).to_have_text(["bravo"])  # only his own
    assert alices.public_id not in await page.content()

    for path in (alices.path, f"{alices.path}/sessions"):
        dashboard.allow_failed_load(404, path)
        response = await page.goto(path)
        assert response is not None
        assert response.status == 404, path
        await expect(page.locator("body")).to_contain_text("not found", ignore_case=True)
        html = await page.content()
        assert alices.key not in html
        assert alices.key[:16] not in html  # not even its masked form
        await expect(page.get_by_test_id("stream-key")).to_have_count(0)
    dashboard.assert_clean()


async def test_an_admin_sees_the_admin_link_and_overview(
    server: Server, dashboard: Dashboard
) -> None:
    await server.create_user("ops@example.com", admin=True)
    await server.create_user("alice@example.com")
    await server.create_channel("alpha", owner="alice@example.com")
    page = await dashboard.new_page()
    await dashboard.sign_in(page, "ops@example.com")
    await page.locator('a[href="/admin"]').click()
    await expect(page).to_have_url(dashboard.url("/admin"))
    await expect(page.locator("body")).to_contain_text("alpha")  # every user's channels
    dashboard.assert_clean()


@pytest.mark.parametrize("path", ["/", "/channels/ch_anything", "/admin"])
async def test_signed_out_visitors_are_sent_to_login(
    server: Server, dashboard: Dashboard, path: str
) -> None:
    page = await dashboard.new_page()
    await page.goto(path)
    await expect(page).to_have_url(dashboard.login_url())
    await expect(page.get_by_test_id("login-email")).to_be_visible()
    dashboard.assert_clean()


async def test_a_wrong_password_is_an_alert_on_the_form(
    server: Server, dashboard: Dashboard
) -> None:
    await server.create_user("streamer@example.com")
    page = await dashboard.new_page()
    # The refusal is an HTTP 401, which Chromium reports in the console: expected here only.
    dashboard.allow_failed_load(401, "/login", "/api/auth/login")
    await page.goto("/login")
    await page.get_by_test_id("login-email").fill("streamer@example.com")
    await page.get_by_test_id("login-password").fill("not the passphrase")
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    await expect(page.get_by_role("alert")).not_to_be_empty()
    await expect(page).to_have_url(dashboard.login_url())
    await expect(page.get_by_role("alert")).not_to_contain_text("not the passphrase")
    dashboard.assert_clean()
