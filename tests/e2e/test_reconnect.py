"""After a network drop the channel page reconnects by itself and catches up.

The browser reaches the server through a TCP relay the test controls: cutting it
drops the page's WebSocket (and refuses new connections) while the channel goes
live; restoring it must bring the page to Live without a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import PASSWORD, RESOLUTION, Dashboard, Server

pytestmark = pytest.mark.ffmpeg


class Relay:
    """127.0.0.1:<port> -> the server's HTTP port; cut() drops everything until restore()."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = True
        self.links: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self.links -= {writer, up_writer}

    def cut(self) -> None:
        self.open = False
        for link in self.links:
            link.transport.abort()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def relay(server: Server) -> AsyncIterator[Relay]:
    relay = Relay(urlsplit(server.http_url).port or 80)
    yield relay
    await relay.close()


async def test_the_page_catches_up_after_a_network_drop(
    server: Server, dashboard: Dashboard, relay: Relay
) -> None:
    await server.create_user("streamer@example.com")
    channel = await server.create_channel("studio", owner="streamer@example.com")
    base = await relay.start()
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
