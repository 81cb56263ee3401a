from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest

from stream_sync.db.backup import BackupError, BackupTargetExists, backup_sqlite


def _database(path: Path, rows: int) -> sqlite3.Connection:
    """A WAL database as the server keeps it: open, with committed rows still in the -wal."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, value TEXT NOT NULL)")
    db.executemany("INSERT INTO t (value) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    return db


def _rows(path: Path) -> int:
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        value: int = db.execute("SELECT count(*) FROM t").fetchone()[0]
        return value


@pytest.fixture
def permissive_umask() -> object:
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
def test_backup_is_a_private_consistent_copy_while_a_writer_is_busy(tmp_path: Path) -> None:
    source, target = tmp_path / "live.db", tmp_path / "backup.db"
    writer = _database(source, rows=100)
    try:
        assert (tmp_path / "live.db-wal").stat().st_size > 0  # a file copy would miss rows
        writer.execute("BEGIN IMMEDIATE")  # the server mid-transaction, holding the write lock
        writer.execute("INSERT INTO t (value) VALUES ('uncommitted')")
        backup_sqlite(source, target)
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert _rows(target) == 100  # committed WAL content, and not the open transaction
    assert _rows(source) == 101
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("backup")) == [
        "backup.db"  # self-contained: no -wal or -shm beside it
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with closing(sqlite3.connect(target)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_an_existing_target_is_kept_unless_overwrite(tmp_path: Path) -> None:
    source, target = tmp_path / "live.db", tmp_path / "backup.db"
    _database(source, rows=3).close()
    target.write_bytes(b"precious")
    with pytest.raises(BackupTargetExists, match="already exists"):
        backup_sqlite(source, target)
    assert target.read_bytes() == b"precious"
    backup_sqlite(source, target, overwrite=True)
    assert _rows(target) == 3


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no database"):
        backup_sqlite(tmp_path / "missing.db", tmp_path / "backup.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_database_fails_cleanly(tmp_path: Path) -> None:
    source = tmp_path / "live.db"
    source.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BackupError, match="backup failed"):
        backup_sqlite(source, tmp_path / "backup.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.db"]


def test_a_bad_target_fails_cleanly(tmp_path: Path) -> None:
    source = tmp_path / "live.db"
    _database(source, rows=1).close()
    with pytest.raises(BackupError, match="does not exist"):
        backup_sqlite(source, tmp_path / "live.db" / "backup.db")  # parent is a file
    with pytest.raises(BackupError, match="failed"):
        backup_sqlite(source, tmp_path, overwrite=True)  # target is a folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.db"]
