"""A pytest plugin (`-p tests.purepython`): import the hot path from its .py sources.

setup.py compiles stream_sync/rtmp/{chunk,counters,flv}.py with mypyc, and Python
prefers the compiled modules. The pure-Python sources are the fallback wherever no
compiler works, so the protocol tests run against them too (test_hot_path_build.py).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

RTMP = Path(__file__).resolve().parents[1] / "stream_sync" / "rtmp"
HOT_PATH = ("chunk", "counters", "flv")


class SourcesFirst(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != "stream_sync.rtmp" or name not in HOT_PATH:
            return None
        return importlib.util.spec_from_file_location(fullname, RTMP / f"{name}.py")


if any(name.startswith("stream_sync") for name in sys.modules):
    raise RuntimeError("tests.purepython must load before stream_sync is imported")
sys.meta_path.insert(0, SourcesFirst())


def pytest_report_header() -> str:
    from stream_sync.rtmp import chunk  # after the finder is installed

    if not chunk.__file__ or not chunk.__file__.endswith(".py"):
        raise RuntimeError(f"the hot path did not load from source: {chunk.__file__}")
    return "purepython-active: stream_sync.rtmp hot path from .py sources"
