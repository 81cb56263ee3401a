"""glibc's heap, kept small: one arena, big blocks mapped, and a trim after a picture.

A live picture (ingest/thumbnails.py) decodes a keyframe with FFmpeg, which allocates
and frees some megabytes of tables the size of the picture. In a process whose heap
is full of media buffers, the freed blocks sit between live ones and stay resident:
each ingest worker kept 3 to 4 MB that way (issue 8: RSS per publisher on Redis,
173 KiB with pictures, 136 without). ``trim`` gives those pages back. Elsewhere than
glibc every call here is a no-op.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["trim", "tune"]

# glibc mallopt(3) parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):
        return None  # not glibc
    return function


_mallopt = _libc_function("mallopt")
_malloc_trim = _libc_function("malloc_trim")


def tune() -> None:
    """One malloc arena, and large blocks always mapped, so freed ones go back.

    Each thread (the picture maker, SQLite's) would otherwise get an arena of its own
    that keeps what it once used, and glibc's mmap threshold rises with every large
    block freed, after which megabyte blocks stay in the heap: a 720p picture left
    some 7 MB behind for good (issue 11). Before any thread starts.
    """
    if _mallopt is not None:
        _mallopt(M_ARENA_MAX, 1)
        _mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def trim() -> None:
    """Free heap pages back to the system, wherever they lie (about 1 ms for 20 MB)."""
    if _malloc_trim is not None:
        _malloc_trim(0)
