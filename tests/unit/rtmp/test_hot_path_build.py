"""The compiled hot path is what runs, and the pure-Python sources still pass every test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_sync.rtmp import chunk, counters, flv
from tests.support import IN_CI

ROOT = Path(__file__).resolve().parents[3]


def compiled(module: object) -> bool:
    return str(getattr(module, "__file__", "")).endswith(".so")


@pytest.mark.skipif(
    os.environ.get("STREAM_SYNC_PURE_PYTHON") == "1", reason="installed without compiling"
)
def test_the_installed_hot_path_is_compiled_and_current() -> None:
    modules = (chunk, counters, flv)
    if not all(compiled(module) for module in modules):
        if IN_CI:
            pytest.fail("the hot path is not compiled: `make install-dev` (setup.py) builds it")
        pytest.skip("the hot path is not compiled here (no C compiler?)")
    for module in modules:
        built = Path(str(module.__file__))
        source = built.with_name(built.name.split(".")[0] + ".py")
        assert built.stat().st_mtime >= source.stat().st_mtime, (
            f"{built.name} is older than {source.name}: `make install-dev` rebuilds it"
        )


def test_the_pure_python_fallback_passes_the_protocol_tests() -> None:
    """The same tests against the .py sources, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.purepython", "-p", "no:cacheprovider",
         "tests/unit/rtmp", "--deselect", f"{Path(__file__).relative_to(ROOT)}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    assert "purepython-active" in result.stdout
