"""Compiles the RTMP hot path with mypyc at install time; the .py files stay the fallback.

`pip install` (and `make run`/`make test`, which use it) builds chunk.py, counters.py
and flv.py into C extensions that Python imports in preference to the sources: the
same code, about 3x (4096-byte chunks) to 6x (128-byte chunks) cheaper per byte
(benchmarks/parser_micro.py). With STREAM_SYNC_PURE_PYTHON=1, or when no C compiler
works, the package installs without them and runs the pure-Python sources.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HOT_PATH = ["stream_sync/rtmp/chunk.py", "stream_sync/rtmp/counters.py", "stream_sync/rtmp/flv.py"]


class OptionalBuildExt(build_ext):
    """A failed compile is a warning, not a failed install: the sources still run."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler failure means "use the sources"
            print(f"warning: hot path not compiled ({exc}); pure Python", file=sys.stderr)


def extensions() -> list[object]:
    if os.environ.get("STREAM_SYNC_PURE_PYTHON") == "1":
        return []
    try:
        from mypyc.build import mypycify  # noqa: PLC0415 - only when compiling
    except ImportError:
        return []
    # No config file: pyproject's mypy section loads the pydantic plugin, which the hot
    # path does not use and the isolated build environment does not have.
    return list(
        mypycify(
            ["--config-file=", "--strict", *HOT_PATH], opt_level="3", group_name="stream_sync_rtmp"
        )
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
