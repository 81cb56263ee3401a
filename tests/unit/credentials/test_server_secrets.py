from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest

from stream_sync.credentials import CredentialConfigError, ServerSecrets, load_or_create


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> object:
    # The modes must come from the code, not from a strict umask.
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
def test_creates_private_files_on_first_load(tmp_path: Path) -> None:
    loaded = load_or_create(tmp_path)
    folder = tmp_path / "secrets"
    assert _mode(folder) == 0o700
    for name, value in (("hmac.key", loaded.hmac_key), ("encryption.key", loaded.encryption_key)):
        path = folder / name
        assert _mode(path) == 0o600
        text = path.read_text()
        assert text.endswith("\n")
        assert base64.b64decode(text, validate=False) == value
        assert len(value) == 32
    assert loaded.hmac_key != loaded.encryption_key
    assert sorted(p.name for p in folder.iterdir()) == ["encryption.key", "hmac.key"]


def test_second_load_reuses_the_files(tmp_path: Path) -> None:
    assert load_or_create(tmp_path) == load_or_create(tmp_path)


def test_repr_shows_no_secret_material(tmp_path: Path) -> None:
    loaded = load_or_create(tmp_path)
    shown = repr(loaded)
    for value in (loaded.hmac_key, loaded.encryption_key):
        assert repr(value) not in shown
        assert base64.b64encode(value).decode() not in shown


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    load_or_create(tmp_path)
    path = tmp_path / "secrets" / "hmac.key"
    path.chmod(mode)
    with pytest.raises(CredentialConfigError, match=r"hmac\.key") as caught:
        load_or_create(tmp_path)
    assert "chmod 600" in str(caught.value)
    assert caught.value.code == "credential_config"


def test_group_writable_folder_is_refused(tmp_path: Path) -> None:
    load_or_create(tmp_path)
    (tmp_path / "secrets").chmod(0o770)
    with pytest.raises(CredentialConfigError, match="chmod 700"):
        load_or_create(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"not base64!\n", base64.b64encode(bytes(16)) + b"\n", base64.b64encode(bytes(33))],
)
def test_wrong_content_is_refused_without_echoing_it(tmp_path: Path, content: bytes) -> None:
    load_or_create(tmp_path)
    path = tmp_path / "secrets" / "encryption.key"
    path.write_bytes(content)
    with pytest.raises(CredentialConfigError, match=r"encryption\.key") as caught:
        load_or_create(tmp_path)
    if content.strip():
        assert content.strip().decode() not in str(caught.value)


def test_a_missing_file_is_created_and_the_other_kept(tmp_path: Path) -> None:
    first = load_or_create(tmp_path)
    (tmp_path / "secrets" / "encryption.key").unlink()
    second = load_or_create(tmp_path)
    assert second.hmac_key == first.hmac_key
    assert second.encryption_key != first.encryption_key


def test_concurrent_loads_agree(tmp_path: Path) -> None:
    results: list[ServerSecrets] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        try:
            results.append(load_or_create(tmp_path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 8
    assert len(set(results)) == 1
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == [
        "encryption.key",
        "hmac.key",
    ]


def test_losing_the_creation_race_reads_the_winners_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process publishes its file between our check and our link().
    winner = os.urandom(32)
    real_link = os.link

    def link_after_rival(source: Path, target: Path) -> None:
        target_path = Path(target)
        if target_path.name == "hmac.key" and not target_path.exists():
            fd = os.open(target_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.write(fd, base64.b64encode(winner) + b"\n")
            os.close(fd)
        real_link(source, target)

    monkeypatch.setattr(os, "link", link_after_rival)
    loaded = load_or_create(tmp_path)
    assert loaded.hmac_key == winner
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == [
        "encryption.key",
        "hmac.key",
    ]


def test_secrets_must_be_32_bytes() -> None:
    with pytest.raises(CredentialConfigError):
        ServerSecrets(hmac_key=bytes(31), encryption_key=bytes(32))
