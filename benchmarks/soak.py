"""A soak: real-time streams coming and going for a long time, on one live server.

    .venv/bin/python -m benchmarks.soak [--streams 50] [--minutes 60]

`stream-sync serve` (embedded) runs as its own process. Each of `--streams` slots
publishes a small pre-encoded file with FFmpeg `-re -c copy` for a random while,
then ends it, either cleanly (FFmpeg stops: FCUnpublish) or by SIGKILL (the
connection just drops), pauses past the grace period, and publishes again, until
the time is up. Every publish is therefore a session of its own, whose end reason
is known in advance: "stopped" for a clean end, "grace expired" for a killed
encoder. Sampled every 10 s: the server's RSS and open file descriptors. At the end
the session history in the database is compared, channel by channel, with what the
publishers did. Writes benchmarks/results/soak.md unless --no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import signal
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from stream_sync.db.engine import DATABASE_FILENAME

from . import procstat
from .report import show
from .slowloris import Server, publisher_command, small_sample

RESULTS = Path(__file__).parent / "results" / "soak.md"
GRACE = 2.0  # seconds; pauses between publishes are longer, so no session continues


@dataclass
class Publish:
    slot: int
    clean: bool
    started: float = 0.0
    exit_code: int | None = None


@dataclass
class Soak:
    publishes: list[Publish] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # t, RSS KiB, fds
    sessions: list[tuple[int, str | None, str | None]] = field(default_factory=list)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def slot(
    index: int, url: str, sample: Path, until: float, args: argparse.Namespace, soak: Soak
) -> None:
    """Publish, end, pause past grace, again, until the time is up."""
    rng = random.Random(args.seed * 1000 + index)
    await asyncio.sleep(rng.uniform(0, args.max_publish / 4))  # stagger the first starts
    while time.monotonic() + args.min_publish < until:
        length = rng.uniform(args.min_publish, args.max_publish)
        publish = Publish(index, clean=rng.random() >= args.kill_share)
        soak.publishes.append(publish)
        publish.started = time.time()
        command = publisher_command(sample, url, length if publish.clean else length + 60)
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        if publish.clean:
            publish.exit_code = await proc.wait()
        else:
            try:
                await asyncio.wait_for(proc.wait(), length)
            except TimeoutError:
                proc.send_signal(signal.SIGKILL)
            publish.exit_code = await proc.wait()
        await asyncio.sleep(GRACE + rng.uniform(2, 5))


async def run_slots(server: Server, args: argparse.Namespace, soak: Soak) -> None:
    sample = small_sample()
    until = time.monotonic() + args.minutes * 60
    keys = server.names(args.streams)
    tasks = [
        asyncio.create_task(slot(i, f"{server.url}/{key}", sample, until, args, soak))
        for i, key in enumerate(keys)
    ]
    began = time.monotonic()
    while not all(task.done() for task in tasks):
        rss = procstat.memory([server.pid]).rss_kib
        soak.samples.append((time.monotonic() - began, rss, fds(server.pid)))
        await asyncio.wait(tasks, timeout=args.sample_every)
    await asyncio.gather(*tasks)
    await asyncio.sleep(GRACE + 3)  # the last killed publishes' grace runs out


def read_sessions(data_dir: Path) -> list[tuple[int, str | None, str | None]]:
    """(channel number, ended_at, end_reason) of every session, in start order."""
    with sqlite3.connect(data_dir / DATABASE_FILENAME) as db:
        rows = db.execute(
            "SELECT c.name, s.ended_at, s.end_reason FROM publish_sessions s"
            " JOIN channels c ON c.id = s.channel_id ORDER BY s.started_at, s.id"
        ).fetchall()
    return [(int(name.removeprefix("bench")), ended, reason) for name, ended, reason in rows]


def soak_run(args: argparse.Namespace) -> Soak:
    soak = Soak()
    with tempfile.TemporaryDirectory() as folder:
        # Every publisher comes from 127.0.0.1: the per-address limit (32) is not what
        # this run is about (tests/integration/test_abuse.py is).
        limits = {"grace_period": str(GRACE), "max_connections_per_address": "10000"}
        server = Server(Path(folder), limits)
        server.prepare(args.streams)
        server.start()
        try:
            asyncio.run(run_slots(server, args, soak))
        finally:
            server.stop()
        soak.sessions = read_sessions(server.data_dir)
    return soak


@dataclass(frozen=True)
class Verdict:
    expected: Counter[str]
    recorded: Counter[str]
    mismatched_slots: list[int]
    open_sessions: int


def verdict(soak: Soak) -> Verdict:
    """Each slot's sessions, in order, against its publishes' expected end reasons."""
    expected_by_slot: dict[int, list[str]] = {}
    for publish in sorted(soak.publishes, key=lambda p: p.started):
        reason = "stopped" if publish.clean else "grace expired"
        expected_by_slot.setdefault(publish.slot, []).append(reason)
    recorded_by_slot: dict[int, list[str]] = {}
    for number, _ended, reason in soak.sessions:
        recorded_by_slot.setdefault(number, []).append(reason or "open")
    slots = set(expected_by_slot) | set(recorded_by_slot)
    return Verdict(
        Counter(r for reasons in expected_by_slot.values() for r in reasons),
        Counter(r for reasons in recorded_by_slot.values() for r in reasons),
        sorted(s for s in slots if expected_by_slot.get(s) != recorded_by_slot.get(s)),
        sum(1 for _, ended, _ in soak.sessions if ended is None),
    )


def flatness(samples: list[tuple[float, int, int]]) -> tuple[float, float, int, int]:
    """Mean RSS (MiB) of the second and the last quarter of the run; fds there, most."""
    quarter = max(1, len(samples) // 4)
    second = samples[quarter : 2 * quarter] or samples
    last = samples[-quarter:]
    return (
        statistics.mean(s[1] for s in second) / 1024,
        statistics.mean(s[1] for s in last) / 1024,
        max(s[2] for s in second),
        max(s[2] for s in last),
    )


def report(soak: Soak, args: argparse.Namespace) -> str:
    judged = verdict(soak)
    rss_early, rss_late, fds_early, fds_late = flatness(soak.samples)
    exits = Counter(("clean" if p.clean else "killed", p.exit_code) for p in soak.publishes)
    return f"""# Soak: streams coming and going

Command: `.venv/bin/python -m benchmarks.soak --streams {args.streams} --minutes \
{args.minutes:g} --min-publish {args.min_publish:g} --max-publish {args.max_publish:g} \
--kill-share {args.kill_share:g} --seed {args.seed}` ({time.strftime("%Y-%m-%d")}, \
{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}).
Server: `stream-sync serve`, embedded, grace {GRACE:g} s. Each publish: FFmpeg
`-re -c copy` of a 240p file for {args.min_publish:g} to {args.max_publish:g} s;
{args.kill_share:.0%} of them SIGKILLed instead of stopping.

- Publishes: {len(soak.publishes)} ({exits}).
- Sessions recorded: {len(soak.sessions)}; expected end reasons {dict(judged.expected)},
  recorded {dict(judged.recorded)}; slots whose history differs from what their
  publishers did: {judged.mismatched_slots or "none"}; sessions left open: \
{judged.open_sessions}.
- Server RSS, mean of the second quarter of the run {rss_early:.1f} MiB, of the last
  quarter {rss_late:.1f} MiB; open file descriptors at most {fds_early} and {fds_late}.
  {len(soak.samples)} samples, every {args.sample_every:g} s.
"""


def main(args: argparse.Namespace) -> None:
    soak = soak_run(args)
    text = report(soak, args)
    show(text, RESULTS, write=not args.no_write)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--min-publish", type=float, default=20)
    parser.add_argument("--max-publish", type=float, default=120)
    parser.add_argument("--kill-share", type=float, default=0.2)
    parser.add_argument("--sample-every", type=float, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
