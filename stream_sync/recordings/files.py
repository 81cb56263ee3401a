"""Where recordings live on a node's disk, and the only ways a path becomes a file.

A recording's path is relative to the node's recordings folder:
``<channel id>/<channel name>-<UTC start>-p<part>.flv``. Paths come from our own
rows and signed URLs, but every one is checked again here before it is opened or
deleted: relative, no ``..``, and inside the folder once symbolic links are followed.
Blocking calls; run them off the event loop.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from datetime import datetime
from pathlib import Path, PurePosixPath

FOLDER_MODE = 0o700  # other users of the machine see no one's recordings
FILE_MODE = 0o600
_SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_SAME_NAME = 100  # a name taken this often is a bug, not a coincidence


class UnsafePath(ValueError):
    """A path that could leave the recordings folder; never shown to anyone but the log."""


def check(relative: str) -> PurePosixPath:
    """``relative`` as a safe relative path of ours, or UnsafePath."""
    path = PurePosixPath(relative)
    if (
        not relative
        or len(relative) > 512
        or path.is_absolute()
        or len(path.parts) != 2
        or not all(_SAFE_PART.fullmatch(part) for part in path.parts)
        or path.suffix != ".flv"
    ):
        raise UnsafePath("not a recording's path")
    return path


def resolve(folder: Path, relative: str) -> Path:
    """The file a recording's path names, inside ``folder`` (UnsafePath otherwise)."""
    path = (folder / check(relative)).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise UnsafePath("outside the recordings folder")
    return path


def create_part(
    folder: Path, channel_id: int, name: str, started: datetime, part: int
) -> tuple[int, str]:
    """Create a new part's file (never an existing one): its descriptor and relative path."""
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    (folder / str(channel_id)).mkdir(mode=FOLDER_MODE, exist_ok=True)
    stem = f"{name}-{started:%Y%m%d-%H%M%S}-p{part}"
    for attempt in range(1, MAX_SAME_NAME + 1):
        relative = f"{channel_id}/{stem}{'' if attempt == 1 else f'-{attempt}'}.flv"
        check(relative)
        try:
            fd = os.open(
                folder / relative, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE
            )
        except FileExistsError:
            continue
        return fd, relative
    raise FileExistsError(f"{MAX_SAME_NAME} recordings named {stem} already")


def size_of(folder: Path, relative: str) -> int | None:
    """The file's size, or None if it is gone (or the path is not ours)."""
    try:
        return resolve(folder, relative).stat().st_size
    except (OSError, UnsafePath):
        return None


def delete(folder: Path, relative: str) -> bool:
    """Delete one recording's file; False if it was not there. UnsafePath for a bad path."""
    path = resolve(folder, relative)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # the channel's folder, once empty
    return True


def delete_older(folder: Path, cutoff: float, keep: frozenset[str] = frozenset()) -> int:
    """Delete recordings last written before ``cutoff`` (epoch seconds), rows or not.

    Files whose rows were deleted while their node could not hear it, or that never
    got a row (the database was away), go when they expire like the others.
    ``keep``: relative paths being written now.
    """
    deleted = 0
    if not folder.is_dir():
        return 0
    for channel in folder.iterdir():
        if not channel.is_dir() or channel.is_symlink() or not channel.name.isdigit():
            continue
        for file in channel.iterdir():
            relative = f"{channel.name}/{file.name}"
            if relative in keep or file.suffix != ".flv" or not file.is_file():
                continue
            with contextlib.suppress(OSError, UnsafePath):
                if file.lstat().st_mtime < cutoff:
                    delete(folder, relative)
                    deleted += 1
    return deleted


def expiry_cutoff(days: int, now: float | None = None) -> float:
    return (time.time() if now is None else now) - days * 86_400
