"""The server's two long-lived secrets: files in the data folder, or the environment.

``hmac.key`` checks stream keys; ``encryption.key`` lets owners reveal them again.
Losing the first invalidates every stream key; losing the second only makes them
unrevealable. They are separate so either can be rotated on its own.

Environment instead of files (containers, secret managers): set both
``STREAM_SYNC_HMAC_SECRET`` and ``STREAM_SYNC_ENCRYPTION_KEY`` to the base64 of 32
random bytes (``openssl rand -base64 32``). The data folder's secret files are then
neither read nor created.

Rotation keeps every issued stream key working. A ``ServerSecrets`` carries the
current generation and older ones in ``previous``: keys are checked and decrypted
with the current secrets first, then with each older generation; new keys always
use the current one. The procedure with files:

1. ``rotate_server_secrets(data_dir)``: the current files become ``hmac.key.1`` and
   ``encryption.key.1`` (older ones shift to ``.2``, ``.3``...), and new current
   files are written.
2. Restart every server process on this data folder, so each one issues keys with
   the new generation and still accepts the old ones.
3. ``credentials.rehash_all_keys(...)``: one transaction re-computes every stored
   key's HMAC and ciphertext under the current generation.
4. ``drop_previous_secrets(data_dir)``: the old generations are deleted. Every key
   now depends only on the current files.

A crash at any point of step 1 leaves a loadable folder in which every secret
value ever used is still present (as current or as an older generation); running
step 1 again finishes the job. Steps 3 and 4 are safe to repeat.

With environment secrets, rotation is the operator's job: move the old values to
``STREAM_SYNC_HMAC_SECRET_PREVIOUS`` / ``STREAM_SYNC_ENCRYPTION_KEY_PREVIOUS``
(comma-separated, newest first), set new current values, restart, rehash, then
remove the ``_PREVIOUS`` variables.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stream_sync.credentials.errors import CredentialConfigError

SECRET_BYTES = 32
SECRETS_DIRNAME = "secrets"
HMAC_KEY_FILENAME = "hmac.key"
ENCRYPTION_KEY_FILENAME = "encryption.key"
_MAX_FILE_BYTES = 1024  # a 32-byte secret in base64 is 45 bytes

HMAC_ENV = "STREAM_SYNC_HMAC_SECRET"
ENCRYPTION_ENV = "STREAM_SYNC_ENCRYPTION_KEY"
PREVIOUS_SUFFIX = "_PREVIOUS"


@dataclass(frozen=True, slots=True)
class ServerSecrets:
    hmac_key: bytes = field(repr=False)
    encryption_key: bytes = field(repr=False)
    # Older generations, newest first: still accepted, never used for new keys.
    previous: tuple[ServerSecrets, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if len(self.hmac_key) != SECRET_BYTES or len(self.encryption_key) != SECRET_BYTES:
            raise CredentialConfigError(f"server secrets must be {SECRET_BYTES} bytes each")

    @property
    def hmac_keys(self) -> tuple[bytes, ...]:
        """Every HMAC secret to try, current first, without repeats."""
        return _unique((self.hmac_key, *(g.hmac_key for g in self.previous)))

    @property
    def encryption_keys(self) -> tuple[bytes, ...]:
        """Every encryption key to try, current first, without repeats."""
        return _unique((self.encryption_key, *(g.encryption_key for g in self.previous)))


def _unique(values: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(dict.fromkeys(values))


def load_or_create(data_dir: Path, *, environ: Mapping[str, str] | None = None) -> ServerSecrets:
    """The secrets from the environment if set there, else from files (created if missing).

    Creating files is safe when several processes start at once: a file is
    published complete with ``link()``, which never replaces an existing file, and
    the loser reads the winner's file.
    """
    from_env = secrets_from_environment(os.environ if environ is None else environ)
    if from_env is not None:
        return from_env
    directory = data_dir / SECRETS_DIRNAME
    _ensure_directory(directory)
    current_hmac = _load_or_create_file(directory / HMAC_KEY_FILENAME)
    current_encryption = _load_or_create_file(directory / ENCRYPTION_KEY_FILENAME)
    return _with_generations(
        current_hmac,
        current_encryption,
        _read_generations(directory, HMAC_KEY_FILENAME),
        _read_generations(directory, ENCRYPTION_KEY_FILENAME),
    )


def secrets_from_environment(environ: Mapping[str, str]) -> ServerSecrets | None:
    """Secrets from ``STREAM_SYNC_*`` variables, or None when they are not set."""
    hmac_value = environ.get(HMAC_ENV, "")
    encryption_value = environ.get(ENCRYPTION_ENV, "")
    if not hmac_value and not encryption_value:
        for name in (HMAC_ENV + PREVIOUS_SUFFIX, ENCRYPTION_ENV + PREVIOUS_SUFFIX):
            if environ.get(name):
                raise CredentialConfigError(
                    f"{name} is set but {HMAC_ENV} and {ENCRYPTION_ENV} are not"
                )
        return None
    for name, value in ((HMAC_ENV, hmac_value), (ENCRYPTION_ENV, encryption_value)):
        if not value:
            other = ENCRYPTION_ENV if name == HMAC_ENV else HMAC_ENV
            raise CredentialConfigError(f"{other} is set but {name} is not; set both or neither")
    return _with_generations(
        _decode_env(HMAC_ENV, hmac_value),
        _decode_env(ENCRYPTION_ENV, encryption_value),
        _decode_env_list(HMAC_ENV + PREVIOUS_SUFFIX, environ.get(HMAC_ENV + PREVIOUS_SUFFIX, "")),
        _decode_env_list(
            ENCRYPTION_ENV + PREVIOUS_SUFFIX, environ.get(ENCRYPTION_ENV + PREVIOUS_SUFFIX, "")
        ),
    )


def _decode_env(name: str, value: str) -> bytes:
    # The value is never echoed: it is, or is close to, a secret.
    decoded = _decode(value.encode("ascii", errors="replace"))
    if decoded is None:
        raise CredentialConfigError(
            f"{name} must be the base64 encoding of {SECRET_BYTES} random bytes "
            "(for example from: openssl rand -base64 32)"
        )
    return decoded


def _decode_env_list(name: str, value: str) -> list[bytes]:
    items = [item.strip() for item in value.split(",")] if value.strip() else []
    decoded = []
    for position, item in enumerate(items, start=1):
        value_bytes = _decode(item.encode("ascii", errors="replace"))
        if value_bytes is None:
            raise CredentialConfigError(
                f"{name}: item {position} must be the base64 encoding of {SECRET_BYTES} bytes"
            )
        decoded.append(value_bytes)
    return decoded


def _decode(raw: bytes) -> bytes | None:
    try:
        value = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return value if len(value) == SECRET_BYTES else None


def _with_generations(
    hmac_key: bytes, encryption_key: bytes, old_hmac: list[bytes], old_encryption: list[bytes]
) -> ServerSecrets:
    """Pair older generations by position; a missing side repeats the current value.

    The pairing does not matter for correctness (every HMAC secret and every
    encryption key is tried on its own); padding only keeps a half-finished
    rotation loadable.
    """
    previous: list[ServerSecrets] = []
    seen = {(hmac_key, encryption_key)}
    for index in range(max(len(old_hmac), len(old_encryption))):
        pair = (
            old_hmac[index] if index < len(old_hmac) else hmac_key,
            old_encryption[index] if index < len(old_encryption) else encryption_key,
        )
        if pair not in seen:
            seen.add(pair)
            previous.append(ServerSecrets(hmac_key=pair[0], encryption_key=pair[1]))
    return ServerSecrets(hmac_key=hmac_key, encryption_key=encryption_key, previous=tuple(previous))


def rotate_server_secrets(
    data_dir: Path, *, environ: Mapping[str, str] | None = None
) -> ServerSecrets:
    """Step 1 of rotation: make the current files an older generation, write new ones.

    Every step is a rename or a link, so a crash leaves each old value in place
    under some name the loader reads; see the module docstring for the procedure.
    """
    _refuse_environment(environ, "rotate them in the environment (see the _PREVIOUS variables)")
    load_or_create(data_dir, environ={})  # the folder and files must be sound first
    directory = data_dir / SECRETS_DIRNAME
    with _exclusive(directory):
        for name in (HMAC_KEY_FILENAME, ENCRYPTION_KEY_FILENAME):
            _rotate_file(directory, name)
    return load_or_create(data_dir, environ={})


def drop_previous_secrets(data_dir: Path, *, environ: Mapping[str, str] | None = None) -> int:
    """Step 4 of rotation: delete older generations; the number of files removed.

    Run it only after ``rehash_all_keys``: keys still stored under an older
    generation stop verifying.
    """
    _refuse_environment(environ, "remove the _PREVIOUS variables instead")
    directory = data_dir / SECRETS_DIRNAME
    if not directory.is_dir():
        return 0
    removed = 0
    with _exclusive(directory):
        for name in (HMAC_KEY_FILENAME, ENCRYPTION_KEY_FILENAME):
            for number in _generations(directory, name):
                (directory / f"{name}.{number}").unlink(missing_ok=True)
                removed += 1
        _fsync_directory(directory)
    return removed


def _refuse_environment(environ: Mapping[str, str] | None, advice: str) -> None:
    if secrets_from_environment(os.environ if environ is None else environ) is not None:
        raise CredentialConfigError(f"the server secrets come from {HMAC_ENV}; {advice}")


def _rotate_file(directory: Path, name: str) -> None:
    # Shift older generations up, highest first, so no rename replaces a file.
    for number in sorted(_generations(directory, name), reverse=True):
        os.rename(directory / f"{name}.{number}", directory / f"{name}.{number + 1}")
    # The current value gets its second name before the first one changes.
    os.link(directory / name, directory / f"{name}.1")
    _fsync_directory(directory)
    temporary = _write_temporary(directory / name, secrets.token_bytes(SECRET_BYTES))
    os.replace(temporary, directory / name)
    _fsync_directory(directory)


_GENERATION_RE = re.compile(r"(\d{1,6})")


def _generations(directory: Path, name: str) -> list[int]:
    """Numbers of the older generations present for one secret, newest (lowest) first."""
    numbers = []
    prefix = name + "."
    for entry in os.listdir(directory):
        if entry.startswith(prefix):
            match = _GENERATION_RE.fullmatch(entry[len(prefix) :])
            if match and int(match.group(1)) > 0:
                numbers.append(int(match.group(1)))
    return sorted(numbers)


def _read_generations(directory: Path, name: str) -> list[bytes]:
    values = []
    for number in _generations(directory, name):
        try:
            values.append(_read(directory / f"{name}.{number}"))
        except FileNotFoundError:
            continue  # dropped while we listed the folder
    return values


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One rotation or drop at a time (a lock on the folder itself, no extra file)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _ensure_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)  # exactly, whatever the umask
    except FileExistsError:
        pass
    mode = directory.stat().st_mode
    if not stat.S_ISDIR(mode):
        raise CredentialConfigError(f"{directory} must be a directory")
    if mode & 0o022:
        raise CredentialConfigError(
            f"{directory} is writable by other users, who could replace the server "
            f"secrets; run: chmod 700 {directory}"
        )


def _load_or_create_file(path: Path) -> bytes:
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    return _create(path)


def _write_temporary(path: Path, value: bytes) -> Path:
    """A private, complete, durable file next to ``path``, to be linked or renamed in."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # exactly, whatever the umask
            file.write(base64.b64encode(value) + b"\n")
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _create(path: Path) -> bytes:
    value = secrets.token_bytes(SECRET_BYTES)
    # Readers never see a half-written secret, and link() fails instead of overwriting.
    temporary = _write_temporary(path, value)
    try:
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read(path)  # another process won the race; use its secret
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)
    return value


def _read(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CredentialConfigError(f"{path} cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CredentialConfigError(f"{path} must be a regular file")
        if info.st_mode & 0o077:
            raise CredentialConfigError(
                f"{path} can be read or changed by other users; run: chmod 600 {path} "
                "(and consider the secret exposed: delete the file to create a new one, "
                "which invalidates what it protects)"
            )
        raw = os.read(fd, _MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    value = _decode(raw)
    if value is None:
        raise CredentialConfigError(
            f"{path} does not hold a base64-encoded {SECRET_BYTES}-byte secret; restore it "
            "from a backup, or delete it to create a new one (deleting hmac.key invalidates "
            "every stream key; deleting encryption.key stops existing keys being revealed)"
        )
    return value


def _fsync_directory(directory: Path) -> None:
    """Make directory entries durable, so a crash cannot lose a secret in use."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
