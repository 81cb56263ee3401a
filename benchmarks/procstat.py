"""CPU time and memory of a server's whole process tree, from /proc.

CPU is utime + stime of every process in the tree (all threads included: SQLite runs
in aiosqlite's threads), plus cutime + cstime: a worker that exited and was reaped
keeps counting through its parent. Sampled before and after the measured window.
Clock ticks are 10 ms; over windows of many seconds that is well below the noise.

Memory: VmRSS now, and VmHWM (each process's peak RSS since it started), summed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry.name))  # field 4: ppid
    return tree


def process_tree(root: int) -> list[int]:
    """root and all its descendants that are alive now."""
    tree = children_map()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, []))
    return found


def cpu_seconds(pids: list[int], *, reaped: bool = True) -> float:
    """reaped=False leaves out the children a process has waited for (cutime, cstime):
    its own CPU alone."""
    columns = (11, 12, 13, 14) if reaped else (11, 12)
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # After "pid (comm) ": state=0 ... utime=11, stime=12, cutime=13, cstime=14.
            total += sum(int(fields[i]) for i in columns)
    return total / CLK_TCK


def _status_kib(pid: int, key: str) -> int:
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True, slots=True)
class Memory:
    rss_kib: int  # now
    hwm_kib: int  # peak since each process started


def memory(pids: list[int]) -> Memory:
    return Memory(
        sum(_status_kib(pid, "VmRSS") for pid in pids),
        sum(_status_kib(pid, "VmHWM") for pid in pids),
    )


class TreeMeter:
    """CPU and memory of one process tree over a window, RSS sampled while it runs."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.cpu_start = 0.0
        self.cpu_end = 0.0
        self.root_cpu_start = 0.0  # the root process's own CPU: a supervisor beside its workers
        self.root_cpu_end = 0.0
        self.idle_rss_kib = 0
        self.max_rss_kib = 0
        self.hwm_kib = 0
        self.processes = 0

    def pids(self) -> list[int]:
        return process_tree(self.root)

    def start(self) -> None:
        pids = self.pids()
        self.cpu_start = cpu_seconds(pids)
        self.root_cpu_start = cpu_seconds([self.root], reaped=False)
        self.idle_rss_kib = self.max_rss_kib = memory(pids).rss_kib

    def sample(self) -> None:
        self.max_rss_kib = max(self.max_rss_kib, memory(self.pids()).rss_kib)

    def stop(self) -> None:
        pids = self.pids()
        self.cpu_end = cpu_seconds(pids)
        self.root_cpu_end = cpu_seconds([self.root], reaped=False)
        mem = memory(pids)
        self.max_rss_kib = max(self.max_rss_kib, mem.rss_kib)
        self.hwm_kib = mem.hwm_kib
        self.processes = len(pids)

    @property
    def cpu_s(self) -> float:
        return self.cpu_end - self.cpu_start

    @property
    def root_cpu_s(self) -> float:
        return self.root_cpu_end - self.root_cpu_start
