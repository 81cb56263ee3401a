"""The ingest benchmark of issue 8: stream-sync beside nginx-rtmp, same run, alternating.

    .venv/bin/python -m benchmarks.ingest                      # the full suite (make bench)
    .venv/bin/python -m benchmarks.ingest --quick              # a smoke test, results in .cache
    .venv/bin/python -m benchmarks.ingest --scenarios b200 --servers embedded --repeat 1 \\
        --hold 20 --no-write                                   # attach py-spy meanwhile
    .venv/bin/python -m benchmarks.ingest --scenarios b200 --servers embedded --repeat 1 \\
        --profile --no-write                                   # py-spy record, automatic

For each repetition, each scenario runs against each server in turn (the order of
servers rotates between repetitions), every time on a freshly started server. The
load generator (loadgen.py) replays a cached FFmpeg-made FLV. Results: one JSON file
per day and a Markdown table, both in benchmarks/results/ (see scenarios.py for what
each number means and report.py for how repetitions are folded).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import flvfile, report
from .scenarios import SCENARIOS, Options, channels_needed, expand, measure
from .servers import SERVERS, ServerSet, ensure_nginx

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_RESULTS = flvfile.CACHE_DIR / "results"
PROFILES = flvfile.CACHE_DIR / "profiles"
DEFAULT_SERVERS = "embedded,redis,nginx"  # what the README's table shows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--scenarios", default="a,b50,b200,b400,c,d",
                        help="a (=a4096,a128), a4096, a128, b (=b50,b200), b50, b200, b400 "
                        "(Redis and nginx only), c, d; comma-separated")  # fmt: skip
    parser.add_argument("--servers", default=DEFAULT_SERVERS, help=", ".join(SERVERS))
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median and range)")
    parser.add_argument("--quick", action="store_true", help="a fifth of the publishers, 5 s")
    parser.add_argument("--duration", type=float, help="override every scenario's duration (s)")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--batch-ms", type=int, default=10, help="real-time write interval (ms)")
    parser.add_argument("--nginx-workers", type=int, default=1, help="nginx worker_processes")
    parser.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="seconds to wait after each server start, its pid printed, before the load",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy record stream-sync during each load"
    )
    parser.add_argument("--results", type=Path, help="where to write (default benchmarks/results)")
    parser.add_argument("--no-write", action="store_true", help="print the table, write nothing")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir with server logs")
    parser.add_argument(
        "--render", type=Path, help="only re-render ingest.md from a results JSON file"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render is not None:
        text = report.markdown(json.loads(args.render.read_text()))
        (args.render.parent / "ingest.md").write_text(text)
        print(text)
        return 0
    scenario_keys = expand(args.scenarios)
    server_names = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in server_names if s not in SERVERS]
    if unknown or not server_names:
        raise SystemExit(f"unknown servers {unknown}; choose from {', '.join(SERVERS)}")
    scenarios = [
        SCENARIOS[k].scaled(quick=args.quick, duration=args.duration) for k in scenario_keys
    ]
    repeat = 1 if args.quick and args.repeat == 3 else max(1, args.repeat)
    options = Options(
        procs=args.procs,
        batch_ms=args.batch_ms,
        hold=args.hold,
        profile_dir=PROFILES if args.profile else None,
    )
    # A plain `kill` must clean up like Ctrl-C does: servers, generators, databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if "nginx" in server_names:
        ensure_nginx()
    flvfile.ensure_sample()
    started = datetime.now(UTC)
    code_before = report.code_state()
    runs: list[dict[str, Any]] = []
    steps = repeat * sum(
        1 for s in scenarios for name in server_names if not s.servers or name in s.servers
    )
    step = 0
    with ServerSet(server_names, nginx_workers=args.nginx_workers, keep=args.keep) as servers:
        need = channels_needed(scenarios)
        for server in servers.servers.values():
            print(f"preparing {server.name} ({need} channels)", flush=True)
            server.prepare(need)
        for rep in range(repeat):
            order = (
                server_names[rep % len(server_names) :] + server_names[: rep % len(server_names)]
            )
            for scenario in scenarios:
                for name in order:
                    if scenario.servers and name not in scenario.servers:
                        continue
                    step += 1
                    t0 = time.monotonic()
                    try:
                        result = measure(servers.servers[name], scenario, options)
                    except Exception as exc:
                        traceback.print_exc()
                        result = {
                            "scenario": scenario.key,
                            "server": name,
                            "error": f"{type(exc).__name__}: {exc}",
                            "failures": scenario.publishers,
                            "problems": servers.servers[name].problems(),
                        }
                    result["rep"] = rep + 1
                    runs.append(result)
                    print(
                        _progress(step, steps, rep, repeat, result, time.monotonic() - t0),
                        flush=True,
                    )
        if args.keep:
            print(f"server logs kept in {servers.root}")
    load = (
        f"{flvfile.SAMPLE.name} replayed by benchmarks/loadgen.py, {args.procs} generator "
        f"process(es), real-time writes every {args.batch_ms} ms"
        + (", --quick" if args.quick else "")
        + (", profiled with py-spy (CPU figures inflated)" if args.profile else "")
    )
    command = [sys.executable, "-m", "benchmarks.ingest", *(sys.argv[1:] if argv is None else argv)]
    doc = report.document(command, started, runs, repeat, load, code_before)
    text = report.markdown(doc)
    if args.no_write:
        print(text)
        return 0
    out = args.results or (QUICK_RESULTS if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"ingest-{started:%Y-%m-%d}.json"
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    (out / "ingest.md").write_text(text)
    print(text)
    print(f"wrote {json_path} and {out / 'ingest.md'}")
    return 0


def _shown(value: float | None, spec: str) -> str:
    """A figure, or "n/a" when the run could not measure it (nothing was ingested)."""
    return "n/a" if value is None else format(value, spec)


def _progress(step: int, steps: int, rep: int, repeat: int, r: dict[str, Any], took: float) -> str:
    head = f"[{step}/{steps}] rep {rep + 1}/{repeat} {r['scenario']:<5} {r['server']:<8}"
    if "error" in r:
        return f"{head} ERROR {r['error']}"
    parts = [f"{took:5.1f} s", f"{r['processes']} procs", f"cpu {_shown(r['cpu_pct'], '.1f')} %"]
    if r["scenario"] != "d":
        parts.append(f"{_shown(r['cpu_s_per_gb'], '.2f')} CPU-s/GB")
        ratio = r["ingested_ratio"]
        parts.append(f"ingested {_shown(None if ratio is None else ratio * 100, '.2f')} %")
    if r["scenario"].startswith("a"):
        parts.append(f"{_shown(r['MBps'], '.0f')} MB/s")
    if r["scenario"] == "d":
        cold, warm = r["admission_cold_ms_p50"], r["admission_warm_ms_p50"]
        parts.append(f"admission p50 cold {cold} ms, warm {warm} ms")
    else:
        parts.append(f"start p50/p99 {r['start_ms_p50']}/{r['start_ms_p99']} ms")
        if r.get("admission_ms_p99") is not None:
            parts.append(
                f"(TCP p99 {r['tcp_ms_p99']} ms, publish->Start p50/p99 "
                f"{r['admission_ms_p50']}/{r['admission_ms_p99']} ms)"
            )
    parts.append(f"{r['failures']} failures")
    if r.get("problems"):
        parts.append(f"{len(r['problems'])} log problems")
    return f"{head} " + ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
