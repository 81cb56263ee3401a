"""How long from "publish accepted" on the server to the browser showing Live.

Starts a real `stream-sync serve` (its own data directory, free ports), creates a user
and a channel with the CLI, signs in through headless Chromium and opens the channel
page. Then, per publish: a MutationObserver in the page records `Date.now()` when
`[data-testid=stream-status]` gets `data-status="live"`; FFmpeg sends a small file
encoded once at the start (`-re -c copy`, so no encoder runs while measuring); the
server's `publish accepted` log line gives the other end (its UTC timestamp, in ms).
latency = browser ms - accepted ms; both clocks are this machine's wall clock. FFmpeg
then stops with SIGINT (a clean unpublish: Offline at once) and the next publish
waits for the page to show Offline.

    .venv/bin/python -m benchmarks.dashboard_latency --publishes 20 [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

from tests.support import LoggedProcess  # the server's log, line by line, awaitable

CHROMIUM = "/usr/bin/chromium"
CLI = [sys.executable, "-m", "stream_sync"]
EMAIL = "bench@example.com"
PASSWORD = "a benchmark passphrase"
KEY = re.compile(r"ssk_[0-9A-Za-z]{12}_[0-9A-Za-z]{43}")
# "2026-11-24T12:00:01.512Z INFO  stream_sync.ingest: conn=... publish accepted ..."
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")
RESULTS = Path(__file__).resolve().parent / "results" / "dashboard_latency.md"

# A function, not a string to evaluate: the dashboard's CSP (script-src 'self') forbids
# eval, which is what page.wait_for_function("...") would need.
OBSERVE_LIVE = """() => {
    window.__liveObserver?.disconnect();
    window.__liveAt = new Promise((resolve) => {
        const check = () => {
            const status = document.querySelector('[data-testid="stream-status"]');
            if (status?.getAttribute('data-status') === 'live') {
                const now = Date.now();
                window.__liveObserver.disconnect();
                resolve(now);
            }
        };
        window.__liveObserver = new MutationObserver(check);
        window.__liveObserver.observe(document.body, {
            subtree: true, childList: true, attributes: true, attributeFilter: ['data-status'],
        });
        check();
    });
}"""


def log_ms(line: str) -> int:
    """The server log line's own timestamp (UTC) as epoch milliseconds."""
    match = STAMP.match(line)
    if match is None:
        raise ValueError(f"no timestamp in log line: {line!r}")
    stamp = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    return round(stamp.timestamp() * 1000)


async def run(args: list[str], stdin: bytes = b"") -> str:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{err.decode()}")
    return out.decode()


async def encode(ffmpeg: str, path: Path, seconds: int) -> None:
    """640x360 at 30 fps (1 s keyframes) plus AAC: what every publish sends, copied."""
    await run([
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-b:v", "1000k",
        "-g", "30", "-c:a", "aac", "-b:a", "64k", "-ac", "1", str(path),
    ])  # fmt: skip


@dataclass(frozen=True)
class Sample:
    accepted_ms: int
    browser_ms: int

    @property
    def latency_ms(self) -> int:
        return self.browser_ms - self.accepted_ms


async def status_is(page: Page, status: str, limit: float = 30) -> None:
    locator = page.locator('[data-testid="stream-status"]')
    await expect(locator).to_have_attribute("data-status", status, timeout=limit * 1000)


async def publish_once(
    page: Page, log: LoggedProcess, ffmpeg: str, media: Path, url: str, key_id: str
) -> Sample:
    await page.evaluate(OBSERVE_LIVE)
    start = len(log.lines)
    publisher = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-re", "-i", str(media), "-c", "copy", "-f", "flv", url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        line = (
            await log.wait_for_log(f"publish accepted channel=bench key_id={key_id}", start)
        ).string
        live_at = page.evaluate("() => window.__liveAt")  # resolves when the page shows Live
        browser_ms = int(await asyncio.wait_for(live_at, 20))
    finally:
        if publisher.returncode is None:
            publisher.send_signal(signal.SIGINT)  # FFmpeg unpublishes and closes cleanly
        try:
            await asyncio.wait_for(publisher.wait(), 10)
        except TimeoutError:
            publisher.kill()
            await publisher.wait()
    await status_is(page, "offline")
    return Sample(log_ms(line), browser_ms)


def percentile(values: list[int], fraction: float) -> int:
    """Nearest rank: the smallest value with at least fraction of the samples at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def machine() -> tuple[str, str]:
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=False)
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False)
    return uname.stdout.strip(), nproc.stdout.strip()


async def benchmark(
    ffmpeg: str, publishes: int, warmup: int
) -> tuple[list[Sample], dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="dashboard-latency-") as folder:
        data = Path(folder) / "data"
        media = Path(folder) / "stream.flv"
        await encode(ffmpeg, media, seconds=30)
        server = await asyncio.create_subprocess_exec(
            *CLI, "serve", "--data-dir", str(data), "--rtmp-port", "0", "--http-port", "0",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        log = LoggedProcess(server)
        try:
            rtmp = (await log.wait_for_log(r"RTMP ingest listening on (\S+)")).group(1)
            http = (await log.wait_for_log(r"HTTP listening on (\S+)")).group(1)
            store = ["--data-dir", str(data)]
            await run(
                [*CLI, "users", "create", EMAIL, "--password-stdin", *store],
                f"{PASSWORD}\n".encode(),
            )
            created = await run([*CLI, "channels", "create", "bench", "--owner", EMAIL, *store])
            key_match = KEY.search(created)
            if key_match is None:
                raise RuntimeError(f"no stream key in:\n{created}")
            key = key_match.group(0)
            listing = await run([*CLI, "channels", "list", *store])
            public_id = log_value(listing, r"^bench\s+(\S+)")
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM)
                page = await browser.new_page(base_url=http)
                await page.goto("/login")
                await page.fill('[data-testid="login-email"]', EMAIL)
                await page.fill('[data-testid="login-password"]', PASSWORD)
                await page.click('[data-testid="login-submit"]')
                await page.wait_for_url(f"{http}/")
                await page.goto(f"/channels/{public_id}")
                await status_is(page, "offline")
                samples: list[Sample] = []
                url = f"{rtmp}/{key}"
                for number in range(-warmup + 1, publishes + 1):
                    sample = await publish_once(page, log, ffmpeg, media, url, key[4:16])
                    label = f"warm-up {number + warmup}" if number <= 0 else f"{number}/{publishes}"
                    print(f"publish {label:>9}: Live in the browser {sample.latency_ms:4d} ms"
                          " after publish accepted", flush=True)  # fmt: skip
                    if number > 0:
                        samples.append(sample)
                versions = {"chromium": browser.version, "ffmpeg": ffmpeg_version(ffmpeg)}
                await browser.close()
        finally:
            await log.stop()
    return samples, versions


def log_value(text: str, pattern: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{pattern!r} not found in:\n{text}")
    return match.group(1)


def ffmpeg_version(ffmpeg: str) -> str:
    out = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, check=False)
    return out.stdout.split("\n", 1)[0].removeprefix("ffmpeg version ").split(" Copyright")[0]


def summary(latencies: list[int]) -> list[tuple[str, str]]:
    count = len(latencies)
    p99 = percentile(latencies, 0.99)
    p99_note = ""
    if math.ceil(0.99 * count) == count:  # fewer than 100 samples
        p99_note = f" (nearest rank: with {count} samples p99 is the max)"
    return [
        ("samples", str(count)),
        ("median", f"{statistics.median(latencies):.0f} ms"),
        ("p99", f"{p99} ms{p99_note}"),
        ("min", f"{min(latencies)} ms"),
        ("max", f"{max(latencies)} ms"),
    ]


def write_results(
    command: str, rows: list[tuple[str, str]], latencies: list[int], versions: dict[str, str]
) -> None:
    uname, nproc = machine()
    lines = [
        "# Dashboard latency: publish accepted to Live in the browser",
        "",
        "From the server's `publish accepted` log line (its UTC timestamp) to `Date.now()`",
        "in the page when a MutationObserver sees `[data-testid=stream-status]` get",
        '`data-status="live"`. FFmpeg sends a pre-encoded 640x360 30 fps FLV file with',
        "`-re -c copy`; every publish ends with SIGINT (a clean unpublish) and the next waits",
        "for Offline. Server, browser and FFmpeg run on the same machine, so both clocks are",
        "the same wall clock; the log's milliseconds are truncated (latency +0..1 ms).",
        "",
        "| | |",
        "|---|---|",
        f"| command | `{command}` |",
        f"| date (UTC) | {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} |",
        f"| machine | `{uname}` |",
        f"| CPUs (nproc) | {nproc} |",
        f"| Python | {platform.python_version()} |",
        f"| Chromium | {versions['chromium']} |",
        f"| FFmpeg | {versions['ffmpeg']} |",
        "",
        "| statistic | latency |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        "Samples (ms, in order): " + ", ".join(str(value) for value in latencies),
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--publishes", type=int, default=20, help="measured publishes [20]")
    parser.add_argument("--warmup", type=int, default=1, help="publishes not counted first [1]")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    options = parser.parse_args()
    if options.publishes < 1 or options.warmup < 0:
        parser.error("--publishes must be at least 1 and --warmup at least 0")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        parser.error("ffmpeg is not on PATH")
    if not Path(CHROMIUM).exists():
        parser.error(f"Chromium is not at {CHROMIUM}")
    started = time.monotonic()
    samples, versions = asyncio.run(benchmark(ffmpeg, options.publishes, options.warmup))
    latencies = [sample.latency_ms for sample in samples]
    rows = summary(latencies)
    print()
    for name, value in rows:
        print(f"{name:>8}: {value}")
    print(f"   total: {time.monotonic() - started:.0f} s")
    if options.write:
        command = " ".join(["-m benchmarks.dashboard_latency", *sys.argv[1:]])
        write_results(f".venv/bin/python {command}", rows, latencies, versions)


if __name__ == "__main__":
    main()
