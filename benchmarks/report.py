"""Results of a run: repetitions folded into median and range, as JSON and Markdown.

Ratios to nginx-rtmp are paired by repetition (stream-sync's run and nginx's run of
the same repetition sat side by side in time), then the median of those ratios is
reported with its range: drift of the machine over the run cancels out of each pair.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .scenarios import SCENARIOS
from .servers import REPO, SERVERS, nginx_version
from .stats import median, spread

Run = dict[str, Any]
SERVER_LABELS = {
    "embedded": "stream-sync (SQLite, in-process)",
    "nothumb": "stream-sync (SQLite, in-process), thumbnails off",
    "redis": "stream-sync (Redis + PostgreSQL)",
    "redis-nothumb": "stream-sync (Redis + PostgreSQL), thumbnails off",
    "nginx": "nginx-rtmp",
    "embedded-push": "stream-sync (SQLite, in-process), pushing every stream",
    "nginx-push": "nginx-rtmp, pushing every stream (`push`)",
}
REFERENCES = ("nginx", "nginx-push")


def reference_of(server: str) -> str:
    """What a server is compared with: the pushing variants with nginx-rtmp's `push`."""
    return "nginx-push" if server.endswith("-push") else "nginx"


def _first_line(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def hot_path() -> str:
    """Whether stream-sync's parser runs compiled (mypyc) or as pure Python, and if stale."""
    found = []
    for name in ("chunk", "counters", "flv"):
        source = REPO / "stream_sync" / "rtmp" / f"{name}.py"
        built = sorted(source.parent.glob(f"{name}.cpython-*.so"))
        if not built:
            found.append(f"{name}.py pure Python")
        elif source.stat().st_mtime > built[-1].stat().st_mtime:
            found.append(f"{name} compiled, STALE (source newer than {built[-1].name})")
        else:
            found.append(f"{name} compiled")
    return ", ".join(found)


def code_state() -> dict[str, str]:
    """Which stream-sync ran: the commit, and a digest of every source and compiled file.

    Taken before and after a run: another engineer's edit or commit in between means
    the repetitions did not all measure the same code, and the report says so.
    """
    digest = hashlib.sha256()
    for path in sorted((REPO / "stream_sync").rglob("*")):
        if path.suffix in (".py", ".so") and path.is_file():
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    revision = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(REPO), "status", "--porcelain", "--", "stream_sync"])
    return {
        "revision": revision + (" (stream_sync/ modified)" if dirty != "?" else ""),
        "sources": digest.hexdigest()[:12],
        "hot_path": hot_path(),
    }


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "uname": " ".join(platform.uname()),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "nginx": nginx_version(),
        "ffmpeg": _first_line(["ffmpeg", "-version"]),
    }


class Folded:
    """The runs of one (scenario, server) pair across repetitions."""

    def __init__(self, runs: list[Run]) -> None:
        self.runs = runs

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.runs if isinstance(r.get(key), int | float)]

    def median(self, key: str) -> float | None:
        return median(self.values(key))

    def cell(self, key: str, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
        values = [v * scale for v in self.values(key)]
        mid, bounds = median(values), spread(values)
        if mid is None or bounds is None:
            return "-"
        if len(values) == 1 or bounds[0] == bounds[1]:
            return fmt.format(mid)
        return f"{fmt.format(mid)} ({fmt.format(bounds[0])}-{fmt.format(bounds[1])})"


def fold(runs: list[Run]) -> dict[tuple[str, str], Folded]:
    grouped: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        grouped.setdefault((run["scenario"], run["server"]), []).append(run)
    return {key: Folded(value) for key, value in grouped.items()}


def paired_ratios(
    runs: list[Run], scenario: str, server: str, key: str, reference: str = "nginx"
) -> list[float]:
    """server/reference of `key`, one ratio per repetition in which both ran."""
    by_rep: dict[int, dict[str, Run]] = {}
    for run in runs:
        if run["scenario"] == scenario:
            by_rep.setdefault(run["rep"], {})[run["server"]] = run
    ratios = []
    for pair in by_rep.values():
        ours, ref = pair.get(server, {}).get(key), pair.get(reference, {}).get(key)
        if isinstance(ours, int | float) and isinstance(ref, int | float) and ref:
            ratios.append(ours / ref)
    return ratios


def ratio_cell(ratios: list[float]) -> str:
    mid, bounds = median(ratios), spread(ratios)
    if mid is None or bounds is None:
        return "-"
    if len(ratios) == 1:
        return f"{mid:.2f}x"
    return f"{mid:.2f}x ({bounds[0]:.2f}-{bounds[1]:.2f})"


def _failures(folded: Folded) -> str:
    total = sum(r.get("failures", 0) for r in folded.runs)
    return str(total) if total == 0 else f"**{total}**"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _ordered(folded: dict[tuple[str, str], Folded], keys: list[str]) -> list[tuple[str, str]]:
    present = [k for k in folded if k[0] in keys]
    return sorted(present, key=lambda k: (keys.index(k[0]), SERVERS.index(k[1])))


def markdown(doc: dict[str, Any]) -> str:
    runs: list[Run] = doc["runs"]
    folded = fold(runs)
    m = doc["machine"]
    out = [
        "# Ingest benchmark (issue 8)",
        "",
        f"Run {doc['started']} - {doc['finished']}, {doc['repeat']} repetition(s), "
        "servers alternating within each repetition; each cell is the median with the "
        "range (min-max) over repetitions. Ratios to nginx-rtmp are per repetition, "
        "then median (range).",
        "",
        "```",
        doc["command"],
        "```",
        "",
        f"- Machine: `{m['uname']}`, {m['nproc']} cores, {m['cpu']}",
        f"- Python {m['python']}; {m['nginx']}; {m['ffmpeg']}",
        *_code_lines(doc),
        f"- Load: {doc['load']}",
        "",
    ]
    a_keys = [k for k in ("a4096", "a128") if any(run["scenario"] == k for run in runs)]
    if a_keys:
        out += ["## (a) One publisher, as fast as possible", ""]
        rows = []
        for scen, server in _ordered(folded, a_keys):
            f = folded[(scen, server)]
            rows.append([
                SERVER_LABELS.get(server, server),
                str(SCENARIOS[scen].chunk_size),
                f.cell("MBps", "{:.0f}"),
                f.cell("cpu_s_per_gb"),
                "-" if server in REFERENCES else ratio_cell(
                    paired_ratios(runs, scen, server, "cpu_s_per_gb", reference_of(server))
                ),
                f.cell("cpu_pct", "{:.0f}"),
                _failures(f),
            ])  # fmt: skip
        out += _table(
            ["server", "chunk", "MB/s", "CPU-s per GB", "x nginx (CPU/GB)", "CPU %", "failures"],
            rows,
        )
        out.append("")
    b_keys = [k for k in ("b50", "b200", "b400") if any(run["scenario"] == k for run in runs)]
    if b_keys:
        seconds = max(r.get("duration_s", 0) for r in runs if r["scenario"] in b_keys)
        out += [
            f"## (b) Real-time publishers (starts spread over 2 s, each sends {seconds:g} s)",
            "",
        ]
        rows = []
        for scen, server in _ordered(folded, b_keys):
            f = folded[(scen, server)]
            rows.append([
                f.cell("publishers", "{:.0f}"),
                SERVER_LABELS.get(server, server),
                f.cell("cpu_pct", "{:.1f}"),
                f.cell("cpu_s_per_gb"),
                "-" if server in REFERENCES else ratio_cell(
                    paired_ratios(runs, scen, server, "cpu_s_per_gb", reference_of(server))
                ),
                f.cell("ingested_ratio", "{:.2f} %", 100),
                f.cell("rss_peak_hwm_kib", "{:.0f}", 1 / 1024),
                f.cell("rss_per_publisher_kib", "{:.0f}"),
                f.cell("processes", "{:.0f}"),
                _failures(f),
            ])  # fmt: skip
        out += _table(
            [
                "publishers",
                "server",
                "CPU % (of one core)",
                "CPU-s per GB",
                "x nginx-rtmp (CPU/GB)",
                "ingested/offered",
                "peak RSS MiB",
                "RSS KiB/publisher above idle",
                "procs",
                "failures",
            ],
            rows,
        )
        out.append("")
        pushing = [key for key in _ordered(folded, b_keys) if key[1].endswith("-push")]
        if pushing:
            out += [
                "Pushing rows are compared with nginx-rtmp pushing the same streams. Bytes "
                "the push target received per byte ingested (RTMP framing included; each "
                "push starts at the stream's next keyframe):",
                "",
                *(
                    f"- {SERVER_LABELS.get(server, server)}, {scen}: "
                    + folded[(scen, server)].cell("pushed_ratio", "{:.3f}")
                    for scen, server in pushing
                ),
                "",
            ]
    if any(run["scenario"] == "c" for run in runs):
        storm = max((r["publishers"] for r in runs if r["scenario"] == "c" and "publishers" in r),
                    default=0)  # fmt: skip
        out += [f"## (c) Storm: {storm} publishers connecting at once", ""]
        rows = []
        for scen, server in _ordered(folded, ["c"]):
            f = folded[(scen, server)]
            rows.append([
                SERVER_LABELS.get(server, server),
                f.cell("start_ms_p50", "{:.0f}"),
                f.cell("start_ms_p99", "{:.0f}"),
                f.cell("start_ms_max", "{:.0f}"),
                f.cell("tcp_ms_p99", "{:.0f}"),
                f.cell("admission_ms_p50", "{:.0f}"),
                f.cell("admission_ms_p99", "{:.0f}"),
                _failures(f),
            ])  # fmt: skip
        out += [
            "Where the start goes: the TCP connect (the kernel's part), then the RTMP handshake"
            " and commands, then the admission (publish sent to Publish.Start).",
            "",
        ]
        out += _table(
            [
                "server",
                "connect->Publish.Start p50 ms",
                "p99 ms",
                "max ms",
                "TCP connect p99 ms",
                "publish->Publish.Start p50 ms",
                "p99 ms",
                "failures",
            ],
            rows,
        )
        out.append("")
    if any(run["scenario"] == "d" for run in runs):
        pairs = max((r["publishers"] for r in runs if r["scenario"] == "d" and "publishers" in r),
                    default=0)  # fmt: skip
        out += [
            "## (d) Publish admission, key cache cold vs warm",
            "",
            f"Sequential publishes, one at a time, after one warm-up publish: {pairs} pairs of "
            "never-used channels, timed from sending `publish` to receiving "
            "NetStream.Publish.Start (key check, lock, fencing token, session record, "
            "events). Cold: the key's first check since the server started (the key "
            "cache misses: a database lookup). Warm: the key's record was cached just "
            "before by a refused publish with the right key id and a wrong secret. "
            "Cold and warm alternate, so both see the same server state. nginx-rtmp "
            "checks nothing: its figures are the protocol's floor. Server CPU is per "
            "connection (handshake to close), averaged over all of them, refused included.",
            "",
        ]
        rows = []
        for scen, server in _ordered(folded, ["d"]):
            f = folded[(scen, server)]
            rows.append([
                SERVER_LABELS.get(server, server),
                f.cell("admission_cold_ms_p50"),
                f.cell("admission_cold_ms_p99"),
                f.cell("admission_warm_ms_p50"),
                f.cell("admission_warm_ms_p99"),
                f.cell("cpu_ms_per_connection"),
                _failures(f),
            ])  # fmt: skip
        out += _table(
            [
                "server",
                "cold p50 ms",
                "cold p99 ms",
                "warm p50 ms",
                "warm p99 ms",
                "server CPU ms per connection",
                "failures",
            ],
            rows,
        )
        out.append("")
    out += _targets(runs, folded)
    out += _generator(runs)
    out += _problems(runs)
    out += [
        "## How it is measured",
        "",
        "See `benchmarks/scenarios.py` (module docstring) for the exact definitions. "
        "In short: CPU is utime+stime of the server's whole process tree from /proc "
        "over the window; ingested = bytes offered minus bytes the server had not read "
        "at the window's end (generator buffers and send queues, server Recv-Q); "
        "RSS per publisher = (max RSS during the load - idle RSS) / publishers. "
        "Each measurement runs on a freshly started server. Reproduce with "
        "`make bench`.",
        "",
    ]
    return "\n".join(out)


Check = Callable[[dict[tuple[str, str], Folded], list[Run]], tuple[str, bool] | None]


def _targets(runs: list[Run], folded: dict[tuple[str, str], Folded]) -> list[str]:
    rows: list[list[str]] = []

    def add(target: str, server: str, measured: str | None, ok: bool | None) -> None:
        if measured is None or ok is None:
            return
        rows.append(
            [target, SERVER_LABELS.get(server, server), measured, "yes" if ok else "**no**"]
        )

    for server in ("embedded", "redis"):
        b200 = folded.get(("b200", server))
        if b200 is not None:
            fails = sum(r.get("failures", 0) for r in b200.runs)
            add("b200: 0 failures", server, str(fails), fails == 0)
            low = min(b200.values("ingested_ratio"), default=None)
            if low is not None:
                add(
                    "b200: ingested/offered >= 99.5 %",
                    server,
                    f"{low * 100:.2f} % (worst)",
                    low >= 0.995,
                )
            ratio = median(paired_ratios(runs, "b200", server, "cpu_s_per_gb"))
            if ratio is not None:
                add("b200: CPU-s/GB <= 1.2x nginx", server, f"{ratio:.2f}x", ratio <= 1.2)
            per = b200.median("rss_per_publisher_kib")
            if per is not None:
                add("memory: <= 150 KiB RSS per publisher", server, f"{per:.0f} KiB", per <= 150)
        for scen, limit in (("a4096", 1.5), ("a128", 2.0)):
            ratio = median(paired_ratios(runs, scen, server, "cpu_s_per_gb"))
            if ratio is not None:
                add(f"{scen}: CPU-s/GB <= {limit}x nginx", server, f"{ratio:.2f}x", ratio <= limit)
        a = folded.get(("a4096", server))
        if a is not None and a.median("MBps") is not None:
            mbps = a.median("MBps") or 0.0
            add("a4096: >= 400 MB/s", server, f"{mbps:.0f} MB/s", mbps >= 400)
    b400 = folded.get(("b400", "redis"))
    if b400 is not None:
        fails = sum(r.get("failures", 0) for r in b400.runs)
        low = min(b400.values("ingested_ratio"), default=0.0)
        add(
            "b400 (Redis, 2 workers): 0 failures, ingested/offered >= 99.5 %",
            "redis",
            f"{fails} failures, {low * 100:.2f} % (worst)",
            fails == 0 and low >= 0.995,
        )
    storm = folded.get(("c", "redis"))
    if storm is not None:
        p99 = storm.median("start_ms_p99")
        fails = sum(r.get("failures", 0) for r in storm.runs)
        if p99 is not None:
            add("c (Redis): p99 < 150 ms, 0 failures", "redis", f"{p99:.0f} ms, {fails} failures",
                p99 < 150 and fails == 0)  # fmt: skip
    thumbnails = median(paired_ratios(runs, "b200", "embedded", "cpu_s_per_gb", "nothumb"))
    if thumbnails is not None:
        add(
            "b200: thumbnails at their defaults cost <= 10 % CPU-s/GB (issue 11)",
            "embedded",
            f"{(thumbnails - 1) * 100:+.1f} % over thumbnails off",
            thumbnails <= 1.1,
        )
    if not rows:
        return []
    return ["## Targets", "", *_table(["target", "server", "measured", "met"], rows), ""]


def _generator(runs: list[Run]) -> list[str]:
    """Is the load generator cheaper than what it measures? Its CPU beside the server's."""
    rows = []
    for (scen, server), f in sorted(fold(runs).items()):
        gen = [r["generator"]["cpu_s"] for r in f.runs]
        lag = [r["generator"]["max_tick_lag_ms"] for r in f.runs]
        rows.append([
            scen, SERVER_LABELS.get(server, server), f.cell("cpu_s"),
            f"{median(gen) or 0:.2f}", f"{max(lag):.0f}",
        ])  # fmt: skip
    return [
        "## Load generator cost",
        "",
        "Generator CPU-s (all its processes, same window) beside the server's; the "
        "pacing timer's worst lateness shows whether the generator kept real time.",
        "",
        *_table(["scenario", "server", "server CPU-s", "generator CPU-s", "max tick lag ms"], rows),
        "",
    ]


def _problems(runs: list[Run]) -> list[str]:
    lines: list[str] = []
    for run in runs:
        reasons = run.get("failure_reasons") or {}
        close = {
            k: v
            for k, v in (run.get("server_close_reasons") or {}).items()
            if not k.startswith("client stopped") and k != "peer closed"
        }
        late = run.get("shutdown_problems") or []
        if not run.get("problems") and not reasons and not close and not late:
            continue
        lines.append(f"- rep {run['rep']} {run['scenario']} {run['server']}:")
        for reason, count in reasons.items():
            lines.append(f"  - {count}x publisher failure: {reason}")
        for reason, count in close.items():
            lines.append(f"  - {count}x server closed with reason {reason!r}")
        for line in run.get("problems", [])[:8]:
            lines.append(f"  - during the load: `{_redact(line)[:300]}`")
        for line in late[:4]:
            lines.append(f"  - while stopping: `{_redact(line)[:300]}`")
    if not lines:
        return ["## Problems seen", "", "None: no failures, no errors or warnings in the logs.", ""]
    return ["## Problems seen", "", *lines, ""]


def _redact(line: str) -> str:
    return re.sub(r"ssk_[0-9A-Za-z_]+", "ssk_…", line)


def _code_lines(doc: dict[str, Any]) -> list[str]:
    unknown = {"revision": "?", "sources": "?", "hot_path": "?"}
    before, after = doc.get("code_before", unknown), doc.get("code_after", unknown)
    lines = [
        f"- stream-sync {before['revision']}, sources {before['sources']}, "
        "log level info (the default)",
        f"- stream-sync hot path: {before['hot_path']}",
    ]
    measured = ("sources", "hot_path")
    if any(before.get(k) != after.get(k) for k in measured):
        lines.append(
            f"- **stream-sync changed during the run** (now {after['revision']}, sources "
            f"{after['sources']}, hot path: {after['hot_path']}): later repetitions "
            "measured other code than earlier ones"
        )
    elif before != after:  # a commit of other files (docs, tests): the same code ran
        lines.append(f"- committed meanwhile as {after['revision']}, the same sources")
    return lines


def document(
    argv: list[str],
    started: datetime,
    runs: list[Run],
    repeat: int,
    load: str,
    code_before: dict[str, str],
) -> dict[str, Any]:
    return {
        "command": shlex.join(argv),
        "started": started.strftime("%Y-%m-%d %H:%M:%SZ"),
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "repeat": repeat,
        "machine": machine(),
        "code_before": code_before,
        "code_after": code_state(),
        "load": load,
        "runs": runs,
    }


def show(text: str, path: Path, *, write: bool) -> None:
    """Print a run's Markdown, and keep it in benchmarks/results/ unless told not to."""
    print(text)
    if write:
        path.write_text(text)
        print(f"written to {path}")
