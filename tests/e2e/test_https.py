"""The dashboard over HTTPS with the RTMPS certificate: Secure cookie, the RTMPS URL shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import Dashboard, Server, ffmpeg_live
from tests.support import debian_ffmpeg, run_process, write_certificate


@pytest.fixture
def server_options(tmp_path: Path) -> list[str]:
    cert, key = write_certificate(tmp_path / "tls")
    return ["--rtmps-port", "0", "--tls-cert", str(cert), "--tls-key", str(key)]


@pytest.mark.ffmpeg
async def test_the_dashboard_speaks_https_and_shows_the_rtmps_url(
    server: Server, dashboard: Dashboard
) -> None:
    assert server.http_url.startswith("https://")
    rtmps = await server.wait_for_log(r"RTMP ingest listening on \S+ and (rtmps://\S+)")
    await server.create_user("streamer@example.com")
    channel = await server.create_channel("studio", owner="streamer@example.com")
    context = await dashboard.new_context(ignore_https_errors=True)  # a self-signed test cert
    page = await dashboard.new_page(context)

    await dashboard.sign_in(page, "streamer@example.com")
    (cookie,) = await context.cookies()
    assert cookie["secure"] is True
    assert cookie["httpOnly"] is True
    await page.goto(channel.path)
    await expect(page.get_by_test_id("server-url")).to_have_text(server.rtmp_url)
    await expect(page.get_by_test_id("secure-server-url")).to_be_visible()
    await expect(page.get_by_test_id("secure-server-url")).to_have_text(rtmps.group(1))

    # An encoder over RTMPS; the page hears it go live over its wss:// socket.
    url = rtmps.group(1).replace("127.0.0.1", "localhost")  # a name, as OBS needs
    server.publishers.append(
        await run_process(ffmpeg_live(debian_ffmpeg(), f"{url}/{channel.key}", seconds=30))
    )
    status = page.get_by_test_id("stream-status")
    await expect(status).to_have_attribute("data-status", "live", timeout=10_000)
    dashboard.assert_clean()
