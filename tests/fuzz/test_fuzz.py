"""A short fuzz run of every target in tests/fuzz: any crash, hang or memory growth fails.

Each target first replays its committed corpus (tests/fuzz/corpus, the crash inputs
of past bugs included), then mutates it for a few seconds: about a minute in all.
libFuzzer exits the process on a crash, so each run is a subprocess. The
10-million-input campaign is `make fuzz` (benchmarks/fuzz.py). The fuzzer runs the
hot path from source; the corpus is also replayed through the installed (mypyc) build.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fuzz.run import NAMES, command
from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
SECONDS = 13  # per target


@pytest.mark.fuzz
@pytest.mark.parametrize("target", NAMES)
def test_fuzz_target_finds_nothing(target: str, tmp_path: Path) -> None:
    fuzz = command(
        target,
        f"-max_total_time={SECONDS}",
        f"-artifact_prefix={tmp_path}/",
        str(tmp_path),  # new inputs go here; the committed corpus is only read
        str(CORPUS / target),
    )
    result = subprocess.run(
        fuzz, cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 90, check=False
    )
    assert result.returncode == 0, result.stderr[-6000:]
    assert "stat::number_of_executed_units" in result.stderr
    assert "INITED" in result.stderr, "the committed corpus was not loaded"


@pytest.mark.fuzz
@pytest.mark.parametrize("target", NAMES)
def test_the_corpus_passes_the_installed_build(target: str) -> None:
    inputs = sorted((CORPUS / target).iterdir())
    assert inputs, f"no corpus for {target}"
    for path in inputs:
        TARGETS[target](path.read_bytes())
