"""The dashboard in a real Chromium against a real `stream-sync serve` and real FFmpeg.

Every wait awaits an event: a server log line (`LoggedProcess.wait_for_log`), a page
state (Playwright's `expect`), a process exit. Nothing sleeps.

Each test gets its own server, data directory and browser; `Dashboard` records what
the browser's console reports as an error and every uncaught page error, and each
test ends with `dashboard.assert_clean()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    Playwright,
    async_playwright,
    expect,
)

from tests.support import LoggedProcess, debian_ffmpeg, require, run_process

CLI = [sys.executable, "-m", "stream_sync"]
KEY = re.compile(r"ssk_[0-9A-Za-z]{12}_[0-9A-Za-z]{43}")
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "a dashboard test passphrase"
# The FFmpeg stream of the live tests: small enough for a 2-core machine next to Chromium.
WIDTH, HEIGHT, FPS = 640, 360, 30
RESOLUTION = f"{WIDTH}\N{MULTIPLICATION SIGN}{HEIGHT}"  # "640 times 360", as the page shows it


@dataclass(frozen=True)
class Channel:
    name: str
    public_id: str
    key: str
    owner: str

    @property
    def key_id(self) -> str:
        return self.key[4:16]

    @property
    def path(self) -> str:
        return f"/channels/{self.public_id}"


@dataclass
class Server:
    """A running `stream-sync serve`, its data directory, and the CLI against it."""

    process: LoggedProcess
    data_dir: Path
    publishers: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return self.process.http_url

    @property
    def rtmp_url(self) -> str:
        return self.process.rtmp_url

    def mark(self) -> int:
        """Where the log is now: wait_for_log(..., start=mark) sees only what follows."""
        return len(self.process.lines)

    async def wait_for_log(
        self, pattern: str, start: int = 0, timeout: float = 20
    ) -> re.Match[str]:
        return await self.process.wait_for_log(pattern, start=start, timeout=timeout)

    async def cli(self, *args: str, stdin: bytes = b"") -> str:
        """`stream-sync ARGS --data-dir DIR`; its standard output (fails the test on error)."""
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            *args,
            "--data-dir",
            str(self.data_dir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
        assert proc.returncode == 0, f"stream-sync {' '.join(args)}: {err.decode()}"
        return out.decode()

    async def create_user(self, email: str, *, admin: bool = False) -> None:
        flags = ["--admin"] if admin else []
        await self.cli(
            "users", "create", email, *flags, "--password-stdin", stdin=f"{PASSWORD}\n".encode()
        )

    async def create_channel(self, name: str, *, owner: str) -> Channel:
        out = await self.cli("channels", "create", name, "--owner", owner)
        key = KEY.search(out)
        assert key is not None, out
        listing = await self.cli("channels", "list")
        public_id = re.search(rf"^{re.escape(name)}\s+(\S+)", listing, re.MULTILINE)
        assert public_id is not None, listing
        return Channel(name, public_id.group(1), key.group(0), owner)

    async def set_grace(self, channel: Channel, seconds: int) -> None:
        """PATCH the channel's grace period as its owner, through the HTTP API."""
        async with httpx.AsyncClient(base_url=self.http_url) as http:
            login = await http.post(
                "/api/auth/login", json={"email": channel.owner, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            answer = await http.patch(
                f"/api/channels/{channel.public_id}",
                json={"grace_seconds": seconds},
                headers={"X-CSRF-Token": login.json()["csrf_token"]},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["grace_seconds"] == seconds

    async def publish(self, key: str, *, seconds: float = 60) -> asyncio.subprocess.Process:
        """FFmpeg encoding a live test pattern into the channel; killed at teardown."""
        proc = await run_process(ffmpeg_live(debian_ffmpeg(), f"{self.rtmp_url}/{key}", seconds))
        self.publishers.append(proc)
        return proc


def ffmpeg_live(exe: str, url: str, seconds: float) -> list[str]:
    """640x360 at 30 fps with 2 s keyframes, plus a sine, in real time (-re)."""
    return [
        exe, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-re", "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
        "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds), "-pix_fmt", "yuv420p",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", str(2 * FPS), "-b:v", "800k", "-maxrate", "800k", "-bufsize", "800k",
        "-c:a", "aac", "-b:a", "64k", "-ac", "1",
        "-f", "flv", url,
    ]  # fmt: skip


@pytest.fixture
def server_options() -> list[str]:
    """More `serve` options; a test module overrides this fixture to add its own."""
    return []


@pytest.fixture
async def server(tmp_path: Path, server_options: list[str]) -> AsyncIterator[Server]:
    data = tmp_path / "data"
    ports = ["--rtmp-port", "0", "--http-port", "0"]
    proc = await run_process([*CLI, "serve", "--data-dir", str(data), *ports, *server_options])
    running = Server(LoggedProcess(proc), data)
    try:
        log = running.process
        log.rtmp_url = (await log.wait_for_log(r"RTMP ingest listening on (\S+)")).group(1)
        log.http_url = (await log.wait_for_log(r"HTTP listening on (\S+)")).group(1)
        yield running
    finally:
        for publisher in running.publishers:
            if publisher.returncode is None:
                publisher.kill()
            await publisher.wait()
        await running.process.kill()
    assert "Traceback" not in running.process.log, running.process.log


@dataclass(frozen=True)
class Allowed:
    """A console error a test provokes on purpose: its text start and where it is reported."""

    text: str
    urls: frozenset[str]


class Dashboard:
    """Chromium contexts on the server's dashboard, with their console errors recorded."""

    def __init__(self, playwright: Playwright, browser: Browser, server: Server) -> None:
        self.playwright = playwright
        self.browser = browser
        self.server = server
        self.errors: list[str] = []
        self.allowed: list[Allowed] = []

    def url(self, path: str) -> str:
        return f"{self.server.http_url}{path}"

    async def new_context(self, **options: object) -> BrowserContext:
        context = await self.browser.new_context(
            base_url=self.server.http_url,
            permissions=["clipboard-read", "clipboard-write"],
            **options,  # type: ignore[arg-type]
        )
        context.on("page", self._watch)
        return context

    async def new_page(self, context: BrowserContext | None = None) -> Page:
        if context is None:
            context = await self.new_context()
        return await context.new_page()

    def _watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", self._page_error)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        for allowed in self.allowed:
            if message.text.startswith(allowed.text) and where in allowed.urls:
                return
        self.errors.append(f"console error at {where}: {message.text}")

    def _page_error(self, error: Error) -> None:
        self.errors.append(f"page error: {error.name}: {error.message}\n{error.stack}")

    def allow_failed_load(self, status: int, *paths: str) -> None:
        """The console error Chromium logs for an HTTP error a test asks for on purpose.

        Only for that status and for the URLs given: the page navigated to, or the
        API call that answers with the status.
        """
        text = f"Failed to load resource: the server responded with a status of {status}"
        self.allowed.append(Allowed(text, frozenset(self.url(path) for path in paths)))

    def assert_clean(self) -> None:
        assert self.errors == [], "\n".join(self.errors)

    async def sign_in(self, page: Page, email: str, password: str = PASSWORD) -> None:
        """The login form, as a person fills it in; ends on "my channels"."""
        await page.goto("/login")
        await page.get_by_test_id("login-email").fill(email)
        await page.get_by_test_id("login-password").fill(password)
        await page.get_by_test_id("login-submit").click()
        await expect(page).to_have_url(self.url("/"))

    async def owner_on_channel_page(
        self, name: str = "studio", owner: str = "streamer@example.com"
    ) -> tuple[Channel, Page]:
        """A new streamer and their new channel, its page open in a signed-in browser."""
        await self.server.create_user(owner)
        channel = await self.server.create_channel(name, owner=owner)
        page = await self.new_page()
        await self.sign_in(page, owner)
        await page.goto(channel.path)
        return channel, page

    def login_url(self) -> re.Pattern[str]:
        """/login, maybe with a query (where to go back to after signing in)."""
        return re.compile(rf"^{re.escape(self.url('/login'))}(\?.*)?$")


@pytest.fixture
def chromium() -> str:
    require(os.path.exists(CHROMIUM), f"Chromium ({CHROMIUM})")
    return CHROMIUM


@pytest.fixture
async def dashboard(server: Server, chromium: str) -> AsyncIterator[Dashboard]:
    async with async_playwright() as playwright:
        playwright.selectors.set_test_id_attribute("data-testid")
        browser = await playwright.chromium.launch(executable_path=chromium)
        try:
            yield Dashboard(playwright, browser, server)
        finally:
            with contextlib.suppress(Error):
                await browser.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """$STREAM_SYNC_SCREENSHOTS (`make screenshots`), else this test's own temporary folder."""
    chosen = os.environ.get("STREAM_SYNC_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def masked_form(key: str) -> re.Pattern[str]:
    """What the page shows for a hidden key: ssk_<key id>_, dots, the last 4 characters."""
    return re.compile(rf"^\s*{re.escape(key[:17])}•+{re.escape(key[-4:])}\s*$")
