"""The load generator: real RTMP publishers replaying the sample FLV, in N processes.

    .venv/bin/python -m benchmarks.loadgen rtmp://127.0.0.1:1935/live \\
        --publishers 50 --names-file keys.txt --duration 30 --spread 2 [--procs 2]
    .venv/bin/python -m benchmarks.loadgen rtmp://127.0.0.1:1935/live --mode fast \\
        --publishers 1 --duration 15 --chunk-size 128

Publishers are dealt round-robin to `--procs` processes (uvloop each, see
publisher.py). The calling process only coordinates, so whoever imports `run` (the
benchmark runner) can sample the server while the load runs, through `Hooks`:

    ready()  every process has loaded and pre-chunked the file; load starts next
    tick()   about twice a second while publishers connect and send
    sent()   sending is over and has settled; connections are still open, so the
             server's counters and socket queues describe exactly this load

Then every publisher ends cleanly (FCUnpublish, deleteStream, close) and `run`
returns one result per publisher: bytes offered, Publish.Start or the failure's
reason, and the time from TCP connect to Publish.Start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import queue
import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import uvloop

from . import flvfile
from .publisher import LoadConfig, Mode, ProcessRun, PublisherResult
from .stats import percentile

READY_TIMEOUT = 120.0
TICK = 0.5


class Hooks(Protocol):
    def ready(self) -> None: ...

    def tick(self) -> None: ...

    def sent(self) -> None: ...


class NoHooks:
    def ready(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def sent(self) -> None:
        pass


@dataclass
class LoadResult:
    config: LoadConfig
    procs: int
    publishers: list[PublisherResult]
    window_s: float  # load start (go) to sent(): the measured window
    generator_cpu_s: float  # all generator processes over that window
    max_tick_lag_ms: float  # realtime pacing's worst lateness: is the generator keeping up?
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[PublisherResult]:
        return [p for p in self.publishers if not p.started or p.error is not None]

    @property
    def bytes_offered(self) -> int:
        return sum(p.bytes_offered for p in self.publishers)

    @property
    def bytes_unsent(self) -> int:
        return sum(p.unsent_at_end for p in self.publishers)

    def failure_reasons(self) -> dict[str, int]:
        return dict(Counter(p.error or "no Publish.Start" for p in self.failures))

    def summary(self) -> dict[str, Any]:
        starts = [p.start_ms for p in self.publishers if p.start_ms is not None]
        return {
            "publishers": len(self.publishers),
            "started": sum(p.started for p in self.publishers),
            "failures": len(self.failures),
            "failure_reasons": self.failure_reasons(),
            "bytes_offered": self.bytes_offered,
            "bytes_unsent_at_end": self.bytes_unsent,
            "window_s": round(self.window_s, 3),
            "offered_MBps": round(self.bytes_offered / self.window_s / 1e6, 2)
            if self.window_s
            else None,
            "start_ms_p50": percentile(starts, 50),
            "start_ms_p99": percentile(starts, 99),
            "generator_cpu_s": round(self.generator_cpu_s, 3),
            "max_tick_lag_ms": round(self.max_tick_lag_ms, 1),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "procs": self.procs,
            "summary": self.summary(),
            "publishers": [p.as_dict() for p in self.publishers],
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(
    worker: int,
    config: LoadConfig,
    sample: Path,
    assignments: list[tuple[int, str]],
    total: int,
    messages: multiprocessing.Queue[tuple[Any, ...]],
    go: MpEvent,
    go_wall: Any,  # multiprocessing.Value("d"): the wall-clock start time
    close: MpEvent,
) -> None:
    """One generator process: load, wait for go, publish, report, wait for close, end."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        run = ProcessRun(config, flvfile.load(sample))
        run.replay(1)  # chunk the file now, not when the first publisher starts
        messages.put(("ready", worker))
        await loop.run_in_executor(None, go.wait)
        go_at = loop.time() + (go_wall.value - time.time())
        cpu = _cpu_seconds()
        if config.mode is Mode.ADMISSION:
            await run.admissions(assignments)
        else:
            await run.publish_all(assignments, total, go_at)
        await asyncio.sleep(config.settle)
        run.measure_unsent()
        cpu = _cpu_seconds() - cpu
        messages.put(("sent", worker, cpu, run.pacing.max_lag * 1000))
        await loop.run_in_executor(None, close.wait)
        await run.close_all()
        messages.put(("result", worker, [r.as_dict() for r in run.results()]))

    uvloop.run(main())


def run(
    config: LoadConfig,
    names: list[str],
    *,
    procs: int = 1,
    hooks: Hooks | None = None,
    sample: Path = flvfile.SAMPLE,
) -> LoadResult:
    """Publish once per name (admission: warm-up name, then cold/warm pairs) and report."""
    hooks = hooks or NoHooks()
    if config.mode is not Mode.REALTIME:
        procs = 1  # one fast publisher, or strictly sequential admissions
    procs = max(1, min(procs, len(names)))
    flvfile.ensure_sample(sample)
    deals: list[list[tuple[int, str]]] = [[] for _ in range(procs)]
    for index, name in enumerate(names):
        deals[index % procs].append((index, name))
    ctx = multiprocessing.get_context("spawn")
    messages: multiprocessing.Queue[tuple[Any, ...]] = ctx.Queue()
    go, close = ctx.Event(), ctx.Event()
    go_wall = ctx.Value("d", 0.0)
    children = [
        ctx.Process(
            target=_child,
            args=(i, config, sample, deals[i], len(names), messages, go, go_wall, close),
            name=f"loadgen-{i}",
            daemon=True,
        )
        for i in range(procs)
    ]
    for child in children:
        child.start()
    try:
        _collect(messages, children, "ready", READY_TIMEOUT)
        hooks.ready()
        started = time.monotonic()
        go_wall.value = time.time() + 0.05
        go.set()
        limit = config.spread + config.duration + config.start_timeout + 60
        if config.mode is Mode.ADMISSION:
            limit += len(names) * 2 * config.start_timeout
        sent = _collect(messages, children, "sent", limit, hooks.tick)
        window = time.monotonic() - started
        hooks.sent()
        close.set()
        results = _collect(messages, children, "result", 60.0)
        for child in children:
            child.join(10)
    finally:
        go.set()
        close.set()
        for child in children:
            if child.is_alive():
                child.terminate()
                child.join(5)
    publishers = sorted(
        (PublisherResult(**item) for message in results for item in message[2]),
        key=lambda p: (p.attempt, p.index),
    )
    return LoadResult(
        config=config,
        procs=procs,
        publishers=publishers,
        window_s=window,
        generator_cpu_s=sum(m[2] for m in sent),
        max_tick_lag_ms=max(m[3] for m in sent),
    )


def _collect(
    messages: multiprocessing.Queue[tuple[Any, ...]],
    children: list[Any],
    kind: str,
    timeout: float,
    tick: Any = None,
) -> list[tuple[Any, ...]]:
    """One `kind` message from every child; fails fast when a child dies."""
    deadline = time.monotonic() + timeout
    got: list[tuple[Any, ...]] = []
    while len(got) < len(children):
        if time.monotonic() > deadline:
            raise TimeoutError(f"load generator: no {kind!r} from every process in {timeout:g} s")
        try:
            message = messages.get(timeout=TICK)
        except queue.Empty:
            dead = [c.name for c in children if c.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"load generator process died: {', '.join(dead)}") from None
            if tick is not None:
                tick()
            continue
        if message[0] != kind:
            raise RuntimeError(f"load generator: expected {kind!r}, got {message[0]!r}")
        got.append(message)
        if tick is not None:
            tick()
    return got


# Command line ----------------------------------------------------------------------------


def parse_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "rtmp" or not parts.hostname:
        raise SystemExit(f"not an rtmp:// URL: {url}")
    return parts.hostname, parts.port or 1935, parts.path.strip("/") or "live"


def stream_names(args: argparse.Namespace) -> list[str]:
    if args.names_file:
        names = [line.strip() for line in Path(args.names_file).read_text().splitlines()]
        names = [name for name in names if name]
    elif args.names:
        names = args.names.split(",")
    else:
        names = [f"{args.name_prefix}{i}" for i in range(args.publishers)]
    if args.publishers:
        if len(names) < args.publishers:
            raise SystemExit(f"{args.publishers} publishers need as many names, got {len(names)}")
        names = names[: args.publishers]
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loadgen", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("url", help="rtmp://host:port/app")
    parser.add_argument("--publishers", type=int, default=0, help="how many (default: names)")
    parser.add_argument("--names", help="comma-separated stream names (keys)")
    parser.add_argument("--names-file", help="one stream name (key) per line")
    parser.add_argument("--name-prefix", default="bench", help="names <prefix>0, <prefix>1, ...")
    parser.add_argument("--procs", type=int, default=1, help="generator processes")
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.REALTIME.value)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per publisher")
    parser.add_argument("--spread", type=float, default=2.0, help="seconds over which to start")
    parser.add_argument("--chunk-size", type=int, default=4096, help="128: no Set Chunk Size")
    parser.add_argument("--batch-ms", type=int, default=10, help="realtime: media ms per write")
    parser.add_argument("--sample", type=Path, default=flvfile.SAMPLE, help="the FLV to replay")
    parser.add_argument("--json", type=Path, help="write every publisher's result here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    host, port, app = parse_url(args.url)
    names = stream_names(args)
    config = LoadConfig(
        host=host,
        port=port,
        app=app,
        mode=Mode(args.mode),
        duration=args.duration,
        spread=args.spread,
        chunk_size=args.chunk_size,
        batch_ms=args.batch_ms,
        settle=0.0 if args.mode == Mode.FAST.value else 0.5,
    )
    result = run(config, names, procs=args.procs, sample=args.sample)
    print(json.dumps(result.summary(), indent=2))
    if args.json:
        args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
