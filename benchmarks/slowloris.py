"""Garbage and slowloris against a live server while real encoders stream through it.

    .venv/bin/python -m benchmarks.slowloris [--attackers 2000] [--publishers 20] [--seconds 60]

`stream-sync serve` runs as its own process (its RSS is measured from /proc). Real
FFmpeg publishers replay a small pre-encoded file with `-re -c copy` from
127.0.0.1 for the whole run. Meanwhile `--attackers` connections from
127.0.2.1 and up (`--per-address` each, under the per-address limit) misbehave,
and every one that is closed is replaced at once, so the pressure holds:

- garbage: a few KiB of random bytes;
- truncated: C0 and half of C1, then silence;
- trickle: a valid handshake, one byte a second;
- loiter: a valid handshake and connect, then a harmless control message one byte
  a second, never publishing (only the publish timeout stops it).

Reported: whether every publisher streamed to the end (FFmpeg's exit status and the
server's own byte count against the file's), how late each kind of bad connection
was closed past its deadline, and the server's RSS before, at peak and after.
Writes benchmarks/results/slowloris.md unless --no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from stream_sync.rtmp import amf0
from stream_sync.rtmp.chunk import ChunkWriter

from . import procstat
from .flvfile import CACHE_DIR, ensure_sample
from .report import show
from .servers import StreamSync

RESULTS = Path(__file__).parent / "results" / "slowloris.md"
SAMPLE = CACHE_DIR / "sample-240p30-600k-10s.flv"
SAMPLE_SECONDS = 10
SWEEP = 0.5  # the server's timeout sweep
KINDS = ("garbage", "truncated", "trickle", "loiter")


def small_command(out: Path) -> list[str]:
    """A 10 s 240p stream: a couple of seconds of CPU to encode, cached like the 720p one."""
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=426x240:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(SAMPLE_SECONDS), "-pix_fmt", "yuv420p",
        "-c:v", "libx264", "-preset", "ultrafast",
        "-b:v", "600k", "-maxrate", "600k", "-bufsize", "1200k", "-g", "60",
        "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(out),
    ]  # fmt: skip


def small_sample() -> Path:
    return ensure_sample(SAMPLE, small_command)


def file_rate(sample: Path) -> float:
    """The sample's bytes a second: what a publisher of it sends."""
    return sample.stat().st_size / SAMPLE_SECONDS


class Server(StreamSync):
    """The embedded stream-sync server with the run's timeouts."""

    def __init__(self, workdir: Path, settings: dict[str, str]) -> None:
        super().__init__("embedded", workdir, redis=False)
        self.settings = settings

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update({f"STREAM_SYNC_{k.upper()}": v for k, v in self.settings.items()})
        return env


def _handshake() -> bytes:
    return b"\x03" + bytes(8) + os.urandom(1528) + os.urandom(1536)


def _connect() -> bytes:
    out = bytearray()
    props = {"app": "live", "type": "nonprivate", "tcUrl": "rtmp://127.0.0.1/live"}
    ChunkWriter().write(out, 3, 20, 0, 0, amf0.encode("connect", 1.0, props))
    return bytes(out)


# A Window Acknowledgement Size: valid, harmless, and never a publish.
_ACK_SIZE = bytes((2, 0, 0, 0, 0, 0, 4, 5, 0, 0, 0, 0)) + (2_500_000).to_bytes(4, "big")


@dataclass
class Tally:
    opened: Counter[str] = field(default_factory=Counter)
    closed_after: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def latest(self, kind: str) -> float:
        return max(self.closed_after[kind], default=0.0)


async def misbehave(kind: str, port: int, source: str, tally: Tally, stop: asyncio.Event) -> None:
    """One bad connection after another until stop; when the server closed each one."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
        except OSError:
            await asyncio.sleep(0.1)
            continue
        tally.opened[kind] += 1
        began = time.monotonic()
        trickle = b""
        if kind == "garbage":
            writer.write(os.urandom(random.randint(1, 4096)))
        elif kind == "truncated":
            writer.write(b"\x03" + os.urandom(700))
        elif kind == "trickle":
            trickle = _handshake()
        else:
            writer.write(_handshake() + _connect())
            trickle = _ACK_SIZE * 1000
        try:
            while True:
                if trickle:
                    writer.write(trickle[:1])
                    trickle = trickle[1:]
                try:
                    data = await asyncio.wait_for(reader.read(65536), 1.0)
                except TimeoutError:
                    continue
                if not data:
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()
        tally.closed_after[kind].append(time.monotonic() - began)


def publisher_command(sample: Path, url: str, seconds: float) -> list[str]:
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
        "-stream_loop", "-1", "-i", str(sample), "-t", f"{seconds:g}",
        "-c", "copy", "-f", "flv", url,
    ]  # fmt: skip


def deadlines(timeouts: dict[str, float]) -> dict[str, float]:
    """When the server must have closed each kind, in seconds after connecting.

    Garbage usually fails at its first byte, but random bytes may begin like a
    handshake (C0 = 3); with 3,073 bytes or more that handshake completes (the
    server does not check C2), the rest may sit as an unfinished chunk, and then
    only the publish timeout ends them.
    """
    return {
        "garbage": timeouts["publish"],
        "truncated": timeouts["handshake"],
        "trickle": timeouts["handshake"],
        "loiter": timeouts["publish"],
    }


@dataclass
class Run:
    seconds: float
    attackers: int
    publishers: int
    exit_codes: list[int]
    publisher_bytes: list[int]  # the server's own media_bytes per publisher
    publisher_reasons: list[str]
    tally: Tally
    rss_kib: dict[str, int]
    closed_reasons: Counter[str]
    timeouts: dict[str, float]
    file_rate: float  # bytes a second of the sample file

    def late(self, kind: str) -> float:
        """How long past its deadline the latest connection of this kind was closed."""
        return self.tally.latest(kind) - deadlines(self.timeouts)[kind]


def run(args: argparse.Namespace) -> Run:
    sample = small_sample()
    timeouts = {"handshake": args.handshake_timeout, "publish": args.publish_timeout}
    with tempfile.TemporaryDirectory() as folder:
        server = Server(
            Path(folder),
            {
                "handshake_timeout": str(timeouts["handshake"]),
                "publish_timeout": str(timeouts["publish"]),
                "idle_timeout": "30",
            },
        )
        server.prepare(args.publishers)
        server.start()
        try:
            return asyncio.run(_attack(server, sample, args, timeouts))
        finally:
            server.stop()


async def _attack(
    server: Server, sample: Path, args: argparse.Namespace, timeouts: dict[str, float]
) -> Run:
    rss: dict[str, int] = {}
    keys = server.names(args.publishers)
    publishers = [
        await asyncio.create_subprocess_exec(
            *publisher_command(sample, f"{server.url}/{key}", args.seconds),
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for key in keys
    ]
    await live(server, len(keys))
    rss["with publishers"] = procstat.memory([server.pid]).rss_kib
    stop = asyncio.Event()
    tally = Tally()
    attackers = []
    for i in range(args.attackers):
        kind = KINDS[i % len(KINDS)]
        source = f"127.0.{2 + i // (args.per_address * 250)}.{1 + (i // args.per_address) % 250}"
        attackers.append(asyncio.create_task(misbehave(kind, server.port, source, tally, stop)))
    peak = 0
    ends = [asyncio.create_task(p.wait()) for p in publishers]
    while not all(end.done() for end in ends):
        peak = max(peak, procstat.memory([server.pid]).rss_kib)
        await asyncio.wait(ends, timeout=1.0)
    rss["peak under attack"] = peak
    stop.set()
    await asyncio.gather(*attackers)
    rss["after the attack"] = procstat.memory([server.pid]).rss_kib
    for proc in publishers:
        await proc.communicate()
    server.stop()
    closed = server.closed()
    log = server.log_text()
    media = [c for c in closed if c.media_bytes is not None]
    return Run(
        seconds=args.seconds,
        attackers=args.attackers,
        publishers=args.publishers,
        exit_codes=[p.returncode if p.returncode is not None else -1 for p in publishers],
        publisher_bytes=[c.media_bytes or 0 for c in media],
        publisher_reasons=re.findall(r"publish ended channel=\S+ key_id=\S+ reason='([^']*)'", log),
        tally=tally,
        rss_kib=rss,
        closed_reasons=Counter(_reason_kind(c.reason) for c in closed if c.media_bytes is None),
        timeouts=timeouts,
        file_rate=file_rate(sample),
    )


async def live(server: Server, count: int) -> None:
    """Return once the server's log shows `count` publishes accepted (it has no other voice)."""
    async with asyncio.timeout(30):
        while server.log_text().count("publish accepted") < count:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


def _reason_kind(reason: str) -> str:
    """A close reason without its numbers, so that like reasons count together."""
    return "".join("N" if ch.isdigit() else ch for ch in reason).replace("NN", "N")[:80]


def report(result: Run, args: argparse.Namespace) -> str:
    expected = result.seconds * result.file_rate
    closes = "\n".join(
        f"| {kind} | {result.tally.opened[kind]} | {deadline:g} s |"
        f" {statistics.median(result.tally.closed_after[kind]):.2f} s |"
        f" {result.tally.latest(kind):.2f} s |"
        for kind, deadline in deadlines(result.timeouts).items()
        if result.tally.closed_after[kind]
    )
    reasons = "\n".join(f"| {r} | {n} |" for r, n in result.closed_reasons.most_common(12))
    rss = result.rss_kib
    grown = rss["peak under attack"] - rss["with publishers"]
    media = result.publisher_bytes
    return f"""# Garbage and slowloris against a live server

Command: `.venv/bin/python -m benchmarks.slowloris --attackers {args.attackers} --publishers \
{args.publishers} --seconds {args.seconds:g}` ({time.strftime("%Y-%m-%d")}, \
{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}).
Server: `stream-sync serve`, embedded, handshake timeout {result.timeouts["handshake"]:g} s,
publish timeout {result.timeouts["publish"]:g} s, per-address limit 32 (the default).

## The publishers

{result.publishers} FFmpeg publishers from 127.0.0.1, `-re -c copy` of a 240p file for
{result.seconds:g} s each, through the whole attack. FFmpeg exit status:
{sorted(set(result.exit_codes))}. The server's own count of each publisher's media bytes:
{min(media, default=0) / expected:.3f} to {max(media, default=0) / expected:.3f} of the
file's bytes for {result.seconds:g} s. End reasons: {sorted(set(result.publisher_reasons))}.

## The attackers

{result.attackers} connections at all times from {result.attackers // args.per_address}
addresses, each replaced as soon as the server closed it.

| Kind | Connections | Deadline | Median close | Latest close |
|---|---|---|---|---|
{closes}

Deadlines after connecting: the handshake timeout for truncated and trickle; the
publish timeout for loiter (never idle, so only that stops it) and for garbage (random
bytes may complete a handshake, whose C2 is not checked, and end in an unfinished
chunk). The server's timeout sweep runs every {SWEEP:g} s; the close is timed by the
attacking process, whose own event loop carries all {result.attackers} connections.

| Server's close reason (attackers) | Count |
|---|---|
{reasons}

## Memory

Server RSS: {rss["with publishers"] / 1024:.1f} MiB with the publishers, \
{rss["peak under attack"] / 1024:.1f} MiB
at the peak of the attack ({grown / max(result.attackers, 1):.1f} KiB per attacking
connection), {rss["after the attack"] / 1024:.1f} MiB after it.
"""


def main(args: argparse.Namespace) -> None:
    result = run(args)
    text = report(result, args)
    show(text, RESULTS, write=not args.no_write)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attackers", type=int, default=2000)
    parser.add_argument("--per-address", type=int, default=20)
    parser.add_argument("--publishers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--handshake-timeout", type=float, default=5.0)
    parser.add_argument("--publish-timeout", type=float, default=15.0)
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
