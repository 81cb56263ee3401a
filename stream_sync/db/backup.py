"""Online backup of the embedded SQLite database.

``sqlite3.Connection.backup`` copies pages under one read transaction, so the copy
is consistent even while the server writes (WAL readers do not block writers),
and it includes committed data still waiting in the ``-wal`` file, which a plain
file copy would miss. The copy is written next to the target and renamed into
place, so a failed or interrupted backup never leaves a half-written file under
the target's name. It holds key hashes and ciphertexts: it is created 0600.

PostgreSQL is backed up with ``pg_dump`` instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path

from stream_sync.errors import DomainError


class BackupError(DomainError):
    code = "backup_failed"
    status = 500


class BackupTargetExists(BackupError):
    code = "backup_exists"
    status = 409


def backup_sqlite(database_path: Path, target: Path, *, overwrite: bool = False) -> None:
    """Copy the database at ``database_path`` to ``target`` consistently, while it is in use.

    Refuses an existing target unless ``overwrite``. The copy is a self-contained
    file (rollback journal mode, no ``-wal`` beside it), checked before it is
    published.
    """
    if not database_path.is_file():
        raise BackupError(f"there is no database at {database_path}")
    if target.exists() and not overwrite:
        raise BackupTargetExists(f"{target} already exists; choose another name or overwrite it")
    if not target.parent.is_dir():
        raise BackupError(f"the folder {target.parent} does not exist")
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    try:
        # Created private before SQLite opens it, so the copy is never readable by others.
        os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        _copy(database_path, temporary)
        os.chmod(temporary, 0o600)
        _fsync(temporary)
        if overwrite:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)  # never replaces a file that appeared meanwhile
        _fsync(target.parent)
    except FileExistsError:
        raise BackupTargetExists(
            f"{target} already exists; choose another name or overwrite it"
        ) from None
    except OSError as exc:
        raise BackupError(f"the backup to {target} failed: {exc.strerror}") from None
    finally:
        for leftover in (temporary, *_sidecars(temporary)):
            leftover.unlink(missing_ok=True)


def _copy(source_path: Path, destination_path: Path) -> None:
    # mode=rw: a missing file is an error instead of a new, empty database.
    source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=rw", uri=True)
    try:
        source.execute("PRAGMA busy_timeout=5000")
        destination = sqlite3.connect(destination_path)
        try:
            source.backup(destination)  # all pages in one step: one consistent snapshot
            destination.execute("PRAGMA journal_mode=DELETE")
            check = destination.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise BackupError("the backup copy failed its integrity check; nothing was kept")
        finally:
            destination.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the backup failed: {exc}") from None
    finally:
        source.close()


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-journal", "-wal", "-shm")]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
