"""glibc heap tuning: freed blocks stranded between live ones go back with a trim."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# A fresh process: 2,000 blocks of 64 KiB (under the mmap threshold, so on the heap),
# every other one freed. The live ones pin the freed ones in place: glibc can't give
# them back by shrinking the heap, and they stay resident until a trim.
PROGRAM = textwrap.dedent(
    """
    import gc
    from stream_sync import heap

    def rss_kib():
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmRSS"))
        return int(line.split()[1])

    heap.tune()
    blocks = [bytes([i % 251]) * 65536 for i in range(2000)]
    del blocks[::2]
    gc.collect()
    before = rss_kib()
    heap.trim()
    print(before, rss_kib())
    """
)


def test_a_trim_returns_the_freed_blocks_that_live_ones_pin_in_the_heap() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True
    )
    before, after = (int(field) for field in done.stdout.split())
    freed = 1000 * 64  # KiB
    assert before - after > freed * 0.8, (before, after)
