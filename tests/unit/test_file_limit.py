"""The ingest raises its open-files limit to fit max_connections (in a child: limits stick)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, resource, sys
logging.basicConfig(stream=sys.stdout, format="%(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
from stream_sync.cli import _raise_file_limit
_raise_file_limit(10_000)
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def run(soft: int, hard: int) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(soft=soft, hard=hard)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def test_the_soft_limit_rises_to_what_the_connections_need() -> None:
    assert run(1024, 20_000) == ["11024"]


def test_a_low_hard_limit_is_used_and_named() -> None:
    lines = run(1024, 4096)
    assert lines[-1] == "4096"
    assert lines[0] == (
        "open files limited to 4096 (max_connections 10000 needs 11024): raise `ulimit -Hn`"
    )


def test_enough_is_left_alone() -> None:
    assert run(15_000, 20_000) == ["15000"]
