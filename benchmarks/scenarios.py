"""The issue's scenarios, and one measurement: a fresh server, one load, its numbers.

What is measured, for every server the same way:

- window: from the moment all generator processes are ready and told to go, to the
  end of sending plus a short settle (0.5 s; none in the as-fast-as-possible mode).
- CPU: utime + stime of the server's whole process tree over the window (procstat).
- offered: every byte the publishers handed to their transports (handshake, commands,
  media), i.e. what a real-time encoder sends, whether or not the server keeps up.
- ingested: offered minus what the server had not read when the window closed: the
  generator's transport buffers and kernel send queues (SIOCOUTQ) plus the server's
  socket receive queues (Recv-Q, from `ss`). The same for every server, and exact: it
  is what the server process had read() by then. The server's own counters are kept
  as a cross-check: stream-sync's per-connection `bytes_in` from its log (read at
  close, so it includes anything read after the window) and nginx-rtmp's global
  `bytes_in` from rtmp_stat at the window's end (it does not count the 3073 handshake
  bytes per connection).
- memory: RSS summed over the tree when idle (just before the load), its maximum
  while the load runs (sampled twice a second), and VmHWM (peak) at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import loadgen, netstat
from .procstat import TreeMeter
from .publisher import LoadConfig, Mode
from .servers import Nginx, Server, StreamSync, summarize
from .stats import percentile

GB = 1e9


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    title: str
    mode: Mode
    publishers: int
    duration: float  # seconds of media (realtime) or of sending (fast)
    spread: float = 0.0
    chunk_size: int = 4096
    nginx_workers: int | None = None  # the reference's worker_processes, if not --nginx-workers
    servers: tuple[str, ...] = ()  # the servers it is for, if not all

    def scaled(self, *, quick: bool, duration: float | None) -> Scenario:
        """--quick: a smoke test (a fifth of the publishers, short); --duration overrides."""
        scenario = self
        if quick:
            scenario = replace(
                scenario,
                publishers=max(1, scenario.publishers // 5),
                duration=min(scenario.duration, 5.0),
            )
        if duration is not None and scenario.mode is not Mode.ADMISSION:
            scenario = replace(scenario, duration=duration)
        return scenario


SCENARIOS = {
    s.key: s
    for s in (
        Scenario(
            "a4096", "(a) 1 publisher, as fast as possible, 4096-byte chunks", Mode.FAST, 1, 15
        ),
        Scenario(
            "a128",
            "(a) 1 publisher, as fast as possible, 128-byte chunks",
            Mode.FAST,
            1,
            15,
            0,
            128,
        ),
        Scenario("b50", "(b) 50 real-time publishers", Mode.REALTIME, 50, 30, 2),
        Scenario("b200", "(b) 200 real-time publishers", Mode.REALTIME, 200, 30, 2),
        # Both cores: stream-sync on Redis runs a worker per core, nginx two workers.
        Scenario(
            "b400",
            "(b) 400 real-time publishers, two workers",
            Mode.REALTIME,
            400,
            30,
            2,
            nginx_workers=2,
            servers=("redis", "nginx"),  # the embedded engine runs one worker
        ),
        Scenario("c", "(c) storm: 200 publishers connecting at once", Mode.REALTIME, 200, 10),
        Scenario("d", "(d) publish admission, key cache cold vs warm", Mode.ADMISSION, 50, 0),
    )
}
ALIASES = {"a": ["a4096", "a128"], "b": ["b50", "b200"]}


def expand(keys: str) -> list[str]:
    found: list[str] = []
    for key in (k.strip() for k in keys.split(",") if k.strip()):
        for name in ALIASES.get(key, [key]):
            if name not in SCENARIOS:
                raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
            if name not in found:
                found.append(name)
    return found


def names_needed(scenario: Scenario) -> int:
    """Admission: a warm-up key, then a (cold, warm) pair of keys per publisher."""
    if scenario.mode is Mode.ADMISSION:
        return 1 + 2 * scenario.publishers
    return scenario.publishers


def channels_needed(scenarios: list[Scenario]) -> int:
    return max(names_needed(s) for s in scenarios)


@dataclass
class Options:
    procs: int = 1
    batch_ms: int = 10
    hold: float = 0.0  # seconds the idle server waits, pid printed, before the load starts
    profile_dir: Path | None = None  # py-spy record of stream-sync during the window


class Sampler:
    """The loadgen hooks: the server (and its state services) measured around the load."""

    def __init__(self, server: Server, services: dict[str, list[int]]) -> None:
        self.server = server
        self.meter = TreeMeter(server.pid)
        self.services = {name: [TreeMeter(pid) for pid in pids] for name, pids in services.items()}
        self.unread = 0
        self.server_bytes_at_end: int | None = None
        self.server_bytes_at_start: int | None = None

    def ready(self) -> None:
        if isinstance(self.server, Nginx):
            self.server_bytes_at_start = self.server.server_bytes()
        for meters in self.services.values():
            for meter in meters:
                meter.start()
        self.meter.start()

    def tick(self) -> None:
        self.meter.sample()

    def sent(self) -> None:
        self.meter.stop()
        for meters in self.services.values():
            for meter in meters:
                meter.stop()
        self.unread = netstat.unread_bytes(self.server.port)
        if isinstance(self.server, Nginx):
            self.server_bytes_at_end = self.server.server_bytes()

    def service_cpu(self) -> dict[str, float]:
        return {
            name: round(sum(m.cpu_s for m in meters), 3) for name, meters in self.services.items()
        }


def state_services(server: Server) -> dict[str, list[int]]:
    """Redis and PostgreSQL serve the redis variant: their CPU is reported beside it."""
    if isinstance(server, StreamSync) and server.redis:
        return {"redis": netstat.listening_pids(6379), "postgres": netstat.listening_pids(5432)}
    return {}


def measure(server: Server, scenario: Scenario, options: Options) -> dict[str, Any]:
    """Start the server, run the scenario's load against it, stop it, return the numbers."""
    if isinstance(server, Nginx):
        server.workers = scenario.nginx_workers or server.default_workers
    server.start()
    profiler: subprocess.Popen[bytes] | None = None
    try:
        if options.hold:
            print(
                f"    {server.name} pid {server.pid} listening on {server.url}; "
                f"load starts in {options.hold:g} s",
                flush=True,
            )
            time.sleep(options.hold)
        admission = scenario.mode is Mode.ADMISSION
        names = server.names(names_needed(scenario))
        config = LoadConfig(
            host=netstat.HOST,
            port=server.port,
            mode=scenario.mode,
            duration=scenario.duration,
            spread=scenario.spread,
            chunk_size=scenario.chunk_size,
            batch_ms=options.batch_ms,
            settle=0.0 if scenario.mode is Mode.FAST else 0.5,
            warmup=1 if admission else 0,
        )
        sampler = Sampler(server, state_services(server))
        hooks: Sampler | _Profiling = sampler
        if options.profile_dir is not None and isinstance(server, StreamSync):
            hooks = _Profiling(sampler, server, scenario, options.profile_dir)
        load = loadgen.run(config, names, procs=options.procs, hooks=hooks)
        if isinstance(hooks, _Profiling):
            profiler = hooks.proc
        # Admission: every pair also made a refused key-cache-filling publish.
        connections = (1 + 3 * scenario.publishers) if admission else len(load.publishers)
        if isinstance(server, StreamSync):
            _wait_closed(server, connections)
        result = _numbers(server, scenario, load, sampler, options)
        seen = len(server.log_text().splitlines())
        _stop(server, profiler)
        profiler = None
        # What the server logged while stopping, reported apart from the load's problems.
        late = server.log_text().splitlines()[seen:]
        result["shutdown_problems"] = summarize(late)
        return result
    finally:
        _stop(server, profiler)


def _stop(server: Server, profiler: subprocess.Popen[bytes] | None) -> None:
    try:
        if profiler is not None and profiler.poll() is None:
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait()
    finally:
        server.stop()


class _Profiling:
    """py-spy record on the server for the load's duration, started as the load starts."""

    def __init__(self, sampler: Sampler, server: Server, scenario: Scenario, out: Path) -> None:
        self.sampler = sampler
        self.server = server
        self.scenario = scenario
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None

    def ready(self) -> None:
        self.sampler.ready()
        exe = shutil.which("py-spy") or str(
            Path(__file__).resolve().parent.parent / ".venv/bin/py-spy"
        )
        self.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        path = self.out / f"{self.scenario.key}-{self.server.name}-{stamp}.svg"
        seconds = int(self.scenario.spread + self.scenario.duration + 1)
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(self.server.pid), "--duration", str(seconds),
             "--rate", "200", "--subprocesses", "--nonblocking", "--output", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        print(f"    py-spy recording {seconds} s of pid {self.server.pid} into {path}", flush=True)

    def tick(self) -> None:
        self.sampler.tick()

    def sent(self) -> None:
        self.sampler.sent()


def _wait_closed(server: StreamSync, connections: int, timeout: float = 15.0) -> None:
    """stream-sync logs `closed ... bytes_in=` a moment after the client is gone."""
    deadline = time.monotonic() + timeout
    while len(server.closed()) < connections and time.monotonic() < deadline:
        time.sleep(0.1)


def _ms(values: list[float], q: float) -> float | None:
    value = percentile(values, q)
    return None if value is None else round(value, 2)


def _numbers(
    server: Server,
    scenario: Scenario,
    load: loadgen.LoadResult,
    sampler: Sampler,
    options: Options,
) -> dict[str, Any]:
    meter = sampler.meter
    offered = load.bytes_offered
    ingested = max(0, offered - load.bytes_unsent - sampler.unread)
    window = load.window_s
    n = scenario.publishers
    result: dict[str, Any] = {
        "scenario": scenario.key,
        "server": server.name,
        "publishers": n,
        "duration_s": scenario.duration,
        "chunk_size": scenario.chunk_size,
        "window_s": round(window, 3),
        "cpu_s": round(meter.cpu_s, 3),
        "cpu_pct": round(meter.cpu_s / window * 100, 2) if window else None,
        "bytes_offered": offered,
        "bytes_ingested": ingested,
        "unread_at_end": {"generator": load.bytes_unsent, "server_recv_queue": sampler.unread},
        "ingested_ratio": round(ingested / offered, 5) if offered else None,
        "cpu_s_per_gb": round(meter.cpu_s / (ingested / GB), 4) if ingested else None,
        "MBps": round(ingested / window / 1e6, 2) if window else None,
        "rss_idle_kib": meter.idle_rss_kib,
        "rss_max_kib": meter.max_rss_kib,
        "rss_peak_hwm_kib": meter.hwm_kib,
        "rss_per_publisher_kib": round((meter.max_rss_kib - meter.idle_rss_kib) / n, 1),
        "processes": meter.processes,  # in the server's tree at the end of the window
        # With workers, the root is the supervisor (API, monitor): its share, apart.
        "root_cpu_s": round(meter.root_cpu_s, 3),
        "failures": len(load.failures),
        "failure_reasons": load.failure_reasons(),
        "generator": {
            "procs": load.procs,
            "cpu_s": round(load.generator_cpu_s, 3),
            "max_tick_lag_ms": round(load.max_tick_lag_ms, 1),
            "batch_ms": options.batch_ms,
        },
    }
    if server.sink is not None:  # what the push target received, RTMP framing included
        pushed = server.sink.server_bytes()
        result["bytes_pushed"] = pushed
        result["pushed_ratio"] = round(pushed / ingested, 4) if ingested else None
    starts = [p.start_ms for p in load.publishers if p.start_ms is not None]
    result["start_ms_p50"] = _ms(starts, 50)
    result["start_ms_p99"] = _ms(starts, 99)
    result["start_ms_max"] = _ms(starts, 100)
    if scenario.key == "c":  # where a storm's start time goes: TCP, then RTMP, then admission
        tcp = [p.connect_ms for p in load.publishers if p.connect_ms is not None]
        admissions = [p.admission_ms for p in load.publishers if p.admission_ms is not None]
        result["tcp_ms_p99"] = _ms(tcp, 99)
        result["admission_ms_p50"] = _ms(admissions, 50)
        result["admission_ms_p99"] = _ms(admissions, 99)
    if scenario.mode is Mode.ADMISSION:
        for attempt, label in ((0, "cold"), (1, "warm")):
            times = [
                p.admission_ms
                for p in load.publishers
                if p.attempt == attempt and p.admission_ms is not None
            ]
            result[f"admission_{label}_ms_p50"] = _ms(times, 50)
            result[f"admission_{label}_ms_p99"] = _ms(times, 99)
        connections = 1 + 3 * n  # warm-up, then per pair: cache fill, cold, warm
        result["cpu_ms_per_connection"] = round(meter.cpu_s / connections * 1000, 2)
    # Admission's cache-filling publishes are refused on purpose (wrong secret).
    expected = "unknown_key" if scenario.mode is Mode.ADMISSION else None
    services = sampler.service_cpu()
    if services:
        result["state_services_cpu_s"] = services
    if isinstance(server, StreamSync):
        closed = server.closed()
        result["server_counted_bytes"] = sum(c.bytes_in for c in closed)
        result["server_close_reasons"] = _count(
            c.reason for c in closed if expected is None or expected not in c.reason
        )
    elif sampler.server_bytes_at_end is not None:
        result["server_counted_bytes"] = sampler.server_bytes_at_end - (
            sampler.server_bytes_at_start or 0
        )
    result["problems"] = server.problems(ignore=expected)  # before the stop: the load's
    return result


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts
