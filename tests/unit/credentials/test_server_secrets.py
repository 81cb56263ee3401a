from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from stream_sync.credentials import (
    CredentialConfigError,
    ServerSecrets,
    drop_previous_secrets,
    load_or_create,
    rotate_server_secrets,
)


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


# Secrets from the environment ------------------------------------------------------------


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


HMAC_VALUE, ENCRYPTION_VALUE = os.urandom(32), os.urandom(32)
GOOD_ENV = {
    "STREAM_SYNC_HMAC_SECRET": _b64(HMAC_VALUE),
    "STREAM_SYNC_ENCRYPTION_KEY": _b64(ENCRYPTION_VALUE),
}


def test_environment_secrets_replace_the_files(tmp_path: Path) -> None:
    loaded = load_or_create(tmp_path, environ=GOOD_ENV)
    assert (loaded.hmac_key, loaded.encryption_key, loaded.previous) == (
        HMAC_VALUE,
        ENCRYPTION_VALUE,
        (),
    )
    assert not (tmp_path / "secrets").exists()  # nothing read, nothing created


def test_the_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in GOOD_ENV.items():
        monkeypatch.setenv(name, value)
    assert load_or_create(tmp_path).hmac_key == HMAC_VALUE


def test_empty_variables_count_as_unset(tmp_path: Path) -> None:
    loaded = load_or_create(
        tmp_path, environ={"STREAM_SYNC_HMAC_SECRET": "", "STREAM_SYNC_ENCRYPTION_KEY": ""}
    )
    assert (tmp_path / "secrets" / "hmac.key").exists()
    assert loaded == load_or_create(tmp_path, environ={})


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ("STREAM_SYNC_HMAC_SECRET", "STREAM_SYNC_ENCRYPTION_KEY"),
        ("STREAM_SYNC_ENCRYPTION_KEY", "STREAM_SYNC_HMAC_SECRET"),
    ],
)
def test_only_one_variable_is_refused(tmp_path: Path, present: str, missing: str) -> None:
    with pytest.raises(CredentialConfigError, match=f"{missing} is not") as caught:
        load_or_create(tmp_path, environ={present: GOOD_ENV[present]})
    assert GOOD_ENV[present] not in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "secrets").exists()


@pytest.mark.parametrize(
    "bad",
    ["not base64!", _b64(bytes(16)), _b64(bytes(33)), "é" * 44, _b64(os.urandom(32)) + "=="],
)
@pytest.mark.parametrize("variable", ["STREAM_SYNC_HMAC_SECRET", "STREAM_SYNC_ENCRYPTION_KEY"])
def test_bad_values_name_the_variable_without_echoing(
    tmp_path: Path, variable: str, bad: str
) -> None:
    with pytest.raises(CredentialConfigError, match=f"^{variable} must be") as caught:
        load_or_create(tmp_path, environ={**GOOD_ENV, variable: bad})
    assert bad not in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.status == 500


def test_previous_environment_generations(tmp_path: Path) -> None:
    old_hmac, older_hmac, old_encryption = os.urandom(32), os.urandom(32), os.urandom(32)
    loaded = load_or_create(
        tmp_path,
        environ={
            **GOOD_ENV,
            "STREAM_SYNC_HMAC_SECRET_PREVIOUS": f"{_b64(old_hmac)}, {_b64(older_hmac)}",
            "STREAM_SYNC_ENCRYPTION_KEY_PREVIOUS": _b64(old_encryption),
        },
    )
    assert loaded.hmac_keys == (HMAC_VALUE, old_hmac, older_hmac)
    assert loaded.encryption_keys == (ENCRYPTION_VALUE, old_encryption)


def test_bad_previous_value_names_the_variable_and_position(tmp_path: Path) -> None:
    with pytest.raises(
        CredentialConfigError, match=r"^STREAM_SYNC_HMAC_SECRET_PREVIOUS: item 2 must be"
    ):
        load_or_create(
            tmp_path,
            environ={
                **GOOD_ENV,
                "STREAM_SYNC_HMAC_SECRET_PREVIOUS": f"{_b64(os.urandom(32))},nope",
            },
        )


def test_previous_without_current_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CredentialConfigError, match="_PREVIOUS is set but"):
        load_or_create(tmp_path, environ={"STREAM_SYNC_HMAC_SECRET_PREVIOUS": _b64(HMAC_VALUE)})


def test_file_rotation_is_refused_with_environment_secrets(tmp_path: Path) -> None:
    with pytest.raises(CredentialConfigError, match="environment"):
        rotate_server_secrets(tmp_path, environ=GOOD_ENV)
    with pytest.raises(CredentialConfigError, match="_PREVIOUS"):
        drop_previous_secrets(tmp_path, environ=GOOD_ENV)
    assert not (tmp_path / "secrets").exists()


# Rotation of the secret files ------------------------------------------------------------


def _names(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "secrets").iterdir())


@pytest.mark.usefixtures("permissive_umask")
def test_rotation_keeps_older_generations_newest_first(tmp_path: Path) -> None:
    first = load_or_create(tmp_path, environ={})
    second = rotate_server_secrets(tmp_path, environ={})
    assert second.hmac_key != first.hmac_key
    assert second.encryption_key != first.encryption_key
    assert second.previous == (ServerSecrets(first.hmac_key, first.encryption_key),)
    third = rotate_server_secrets(tmp_path, environ={})
    assert third.hmac_keys == (third.hmac_key, second.hmac_key, first.hmac_key)
    assert third.encryption_keys == (
        third.encryption_key,
        second.encryption_key,
        first.encryption_key,
    )
    assert load_or_create(tmp_path, environ={}) == third
    assert _names(tmp_path) == [
        "encryption.key",
        "encryption.key.1",
        "encryption.key.2",
        "hmac.key",
        "hmac.key.1",
        "hmac.key.2",
    ]
    for path in (tmp_path / "secrets").iterdir():
        assert _mode(path) == 0o600
    assert drop_previous_secrets(tmp_path, environ={}) == 4
    assert _names(tmp_path) == ["encryption.key", "hmac.key"]
    assert load_or_create(tmp_path, environ={}) == ServerSecrets(
        third.hmac_key, third.encryption_key
    )
    assert drop_previous_secrets(tmp_path, environ={}) == 0


def test_a_readable_old_generation_is_refused_like_a_current_one(tmp_path: Path) -> None:
    load_or_create(tmp_path, environ={})
    rotate_server_secrets(tmp_path, environ={})
    (tmp_path / "secrets" / "hmac.key.1").chmod(0o644)
    with pytest.raises(CredentialConfigError, match=r"hmac\.key\.1"):
        load_or_create(tmp_path, environ={})


def _count_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    steps = 0
    for name in ("rename", "link", "replace"):
        real = getattr(os, name)

        def counting(*args: object, _real: Any = real) -> None:
            nonlocal steps
            steps += 1
            _real(*args)

        monkeypatch.setattr(os, name, counting)
    rotate_server_secrets(tmp_path, environ={})
    monkeypatch.undo()
    return steps


def _crash_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    calls = 0
    for name in ("rename", "link", "replace"):
        real = getattr(os, name)

        def crashing(*args: object, _real: Any = real) -> None:
            nonlocal calls
            if calls == step:
                raise OSError("simulated crash")
            calls += 1
            _real(*args)

        monkeypatch.setattr(os, name, crashing)


def _setup_two_generations(folder: Path) -> tuple[set[bytes], set[bytes]]:
    first = load_or_create(folder, environ={})
    second = rotate_server_secrets(folder, environ={})
    return {first.hmac_key, second.hmac_key}, {first.encryption_key, second.encryption_key}


def test_a_crash_at_any_step_of_rotation_leaves_every_secret_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup_two_generations(tmp_path / "count")
    steps = _count_steps(tmp_path / "count", monkeypatch)
    assert steps == 6  # per file: shift .1 to .2, link current to .1, replace current
    for step in range(steps):
        folder = tmp_path / f"crash-{step}"
        hmac_values, encryption_values = _setup_two_generations(folder)
        _crash_at(monkeypatch, step)
        with pytest.raises(OSError, match="simulated crash"):
            rotate_server_secrets(folder, environ={})
        monkeypatch.undo()
        loaded = load_or_create(folder, environ={})
        assert hmac_values <= set(loaded.hmac_keys), step
        assert encryption_values <= set(loaded.encryption_keys), step
        # Running the rotation again finishes the job, still losing nothing.
        again = rotate_server_secrets(folder, environ={})
        assert hmac_values <= set(again.hmac_keys[1:]), step
        assert encryption_values <= set(again.encryption_keys[1:]), step
        assert load_or_create(folder, environ={}) == again
