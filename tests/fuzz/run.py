"""Run one fuzz target under atheris/libFuzzer: `python -m tests.fuzz.run TARGET [libFuzzer flags]`.

The RTMP hot path is imported from its .py sources (tests/purepython.py), not the
mypyc build, so that atheris' bytecode instrumentation sees every branch; only
stream_sync is instrumented. Everything after TARGET goes to libFuzzer, e.g.

    python -m tests.fuzz.run session -runs=100000 -max_len=8192 \\
        -timeout=10 -rss_limit_mb=512 build/fuzz/session tests/fuzz/corpus/session

libFuzzer writes new inputs into the first directory only, so keep the committed
corpus second. `-merge=1 tests/fuzz/corpus/T NEW_DIR` folds in what adds coverage.
Importing this module imports neither atheris nor stream_sync: `command()` builds
the command line for the pytest run and the campaign (benchmarks/fuzz.py).
"""

from __future__ import annotations

import shlex
import sys

# The slowest target first, so that parallel lanes finish together.
NAMES = ("session", "server", "amf0", "media")
# Inputs longer than this teach the fuzzer nothing new and only slow it down.
MAX_LEN = {"server": 8192, "session": 8192, "amf0": 4096, "media": 4096}
TIMEOUT_S = 10  # one input taking longer is a hang (the slowest take milliseconds)
RSS_LIMIT_MB = 512  # the process idles at about 60 MB; more means memory grows per input


def command(target: str, *flags: str) -> list[str]:
    """Fuzz target with the limits that define a crash, plus flags (runs, directories)."""
    return [
        sys.executable,
        "-m",
        "tests.fuzz.run",
        target,
        f"-max_len={MAX_LEN[target]}",
        f"-timeout={TIMEOUT_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        "-print_final_stats=1",
        *flags,
    ]


def main() -> None:
    import tests.purepython  # noqa: F401 - first: the hot path from source

    import atheris  # isort: skip

    with atheris.instrument_imports(include=["stream_sync"]):
        from stream_sync.rtmp import chunk
        from tests.fuzz.targets import TARGETS

    if len(sys.argv) < 2 or sys.argv[1] not in NAMES:
        sys.exit(f"usage: python -m tests.fuzz.run {{{','.join(NAMES)}}} [libFuzzer flags]")
    if not str(chunk.__file__).endswith(".py"):
        sys.exit(f"the hot path did not load from source: {chunk.__file__}")
    name = sys.argv[1]
    # libFuzzer's -merge and -fork run argv[0] again through the shell: make it this command.
    again = f"{shlex.quote(sys.executable)} -m tests.fuzz.run {name}"
    atheris.Setup([again, *sys.argv[2:]], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
