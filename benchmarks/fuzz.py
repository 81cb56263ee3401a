"""The fuzzing campaign of issue 9: at least 10 million inputs into the RTMP core.

Runs every target of tests/fuzz under libFuzzer for --runs inputs each, at most
--jobs at a time, seeded with the committed corpus (tests/fuzz/corpus/TARGET, read
only: new inputs go to build/fuzz/TARGET, crashes to build/fuzz/crashes/). Then writes
benchmarks/results/fuzz.md: inputs, speed, peak RSS, coverage and crashes per target.

    .venv/bin/python -m benchmarks.fuzz [--runs 2500000] [--jobs 2]    # make fuzz

`make fuzz-corpus` afterwards folds what the run found into the committed corpus.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from tests.fuzz.run import NAMES, RSS_LIMIT_MB, TIMEOUT_S, command

from .report import code_state, machine
from .servers import REPO

RESULTS = REPO / "benchmarks" / "results" / "fuzz.md"
WORK = REPO / "build" / "fuzz"
CORPUS = REPO / "tests" / "fuzz" / "corpus"


@dataclass
class Outcome:
    target: str
    returncode: int
    seconds: float
    stats: dict[str, int]
    done: dict[str, str]  # the DONE line's cov/ft/corp
    seed: str
    crash: str  # the artifact libFuzzer wrote, or ""


def run(target: str, runs: int) -> Outcome:
    work = WORK / target
    work.mkdir(parents=True, exist_ok=True)
    (WORK / "crashes").mkdir(parents=True, exist_ok=True)
    log = WORK / f"{target}.log"
    artifacts = f"-artifact_prefix={WORK / 'crashes'}/{target}-"
    fuzz = command(target, f"-runs={runs}", artifacts, str(work), str(CORPUS / target))
    started = time.monotonic()
    with log.open("w") as out:
        returncode = subprocess.run(
            fuzz, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    stats = {k: int(v) for k, v in re.findall(r"^stat::(\w+):\s+(\d+)", text, re.M)}
    done = re.search(r"DONE\s+cov: (\d+) ft: (\d+) corp: (\S+)", text)
    seed = re.search(r"INFO: Seed: (\d+)", text)
    crash = re.search(r"Test unit written to (\S+)", text)
    print(f"{target}: rc={returncode} {stats} in {seconds:.0f} s", flush=True)
    return Outcome(
        target,
        returncode,
        seconds,
        stats,
        dict(zip(("cov", "ft", "corp"), done.groups(), strict=True)) if done else {},
        seed.group(1) if seed else "?",
        crash.group(1) if crash else "",
    )


def render(
    outcomes: list[Outcome],
    command: str,
    started: datetime,
    seconds: float,
    code: dict[str, str],
    load: tuple[float, float],
) -> str:
    info = machine()
    changed = code != code_state()
    total = sum(o.stats.get("number_of_executed_units", 0) for o in outcomes)
    crashes = sum(1 for o in outcomes if o.returncode)
    lines = [
        "# Fuzzing the RTMP core (issue 9)",
        "",
        f"`{command}`, {started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.0f} min wall clock.",
        f"{info['cpu']}, {info['nproc']} CPUs, Python {info['python']}, "
        f"atheris {version('atheris')} (libFuzzer), stream-sync {code['revision']} "
        f"(sources {code['sources']}), hot path from its .py sources (instrumented).",
        f"Load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (other work shares "
        "the machine: exec/s are a floor)."
        + (" stream_sync changed during the run: a target ran the code of its start." * changed),
        "",
        "Targets (tests/fuzz/targets.py): `server` drives a `ServerConnection` from its first "
        "byte as the ingest does (reads of fuzzed sizes into `get_buffer()`, decisions, "
        "timers, `data_to_send()`); `session` the same after a real client's handshake; "
        "`amf0` decodes AMF0 and round-trips what decodes; `media` parses FLV tags and "
        "describes codec records. Anything but `ProtocolError` (`CodecError` for records), "
        "a connection holding more than its `RtmpConfig` allows after any read, an input "
        f"running over {TIMEOUT_S} s or the process over {RSS_LIMIT_MB} MB counts as a crash.",
        "",
        "| target | inputs | exec/s | peak RSS | coverage (edges / features) | corpus "
        "| new units | slowest input | crashes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        s = o.stats
        lines.append(
            f"| {o.target} | {s.get('number_of_executed_units', 0):,} "
            f"| {s.get('average_exec_per_sec', 0):,} | {s.get('peak_rss_mb', 0)} MB "
            f"| {o.done.get('cov', '?')} / {o.done.get('ft', '?')} | {o.done.get('corp', '?')} "
            f"| {s.get('new_units_added', 0):,} | {s.get('slowest_unit_time_sec', 0) or '< 1'} s "
            f"| {1 if o.returncode else 0}{f' ({o.crash})' if o.crash else ''} |"
        )
    lines += [
        f"| **total** | **{total:,}** | | | | | | | **{crashes}** |",
        "",
        "libFuzzer seeds: " + ", ".join(f"{o.target} {o.seed}" for o in outcomes) + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2_500_000, help="inputs per target")
    parser.add_argument("--jobs", type=int, default=2, help="targets fuzzed at once")
    parser.add_argument("--targets", nargs="*", default=list(NAMES), choices=NAMES)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    started, clock, code, load = datetime.now(UTC), time.monotonic(), code_state(), os.getloadavg()
    with ThreadPoolExecutor(args.jobs) as pool:
        outcomes = list(pool.map(lambda target: run(target, args.runs), args.targets))
    seconds, loads = time.monotonic() - clock, (load[0], os.getloadavg()[0])
    command = shlex.join(["python", "-m", "benchmarks.fuzz", *sys.argv[1:]])
    args.results.write_text(render(outcomes, command, started, seconds, code, loads))
    print(f"wrote {args.results}")
    if any(o.returncode for o in outcomes):
        sys.exit("crashes found: see build/fuzz/*.log and build/fuzz/crashes/")


if __name__ == "__main__":
    main()
