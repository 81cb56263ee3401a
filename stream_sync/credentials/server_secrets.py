"""The server's two long-lived secrets, kept as files in the data directory.

``hmac.key`` checks stream keys; ``encryption.key`` lets owners reveal them again.
Losing the first invalidates every stream key; losing the second only makes them
unrevealable. They are separate so either can be rotated on its own.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from stream_sync.credentials.errors import CredentialConfigError

SECRET_BYTES = 32
SECRETS_DIRNAME = "secrets"
HMAC_KEY_FILENAME = "hmac.key"
ENCRYPTION_KEY_FILENAME = "encryption.key"
_MAX_FILE_BYTES = 1024  # a 32-byte secret in base64 is 45 bytes


@dataclass(frozen=True, slots=True)
class ServerSecrets:
    hmac_key: bytes = field(repr=False)
    encryption_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.hmac_key) != SECRET_BYTES or len(self.encryption_key) != SECRET_BYTES:
            raise CredentialConfigError(f"server secrets must be {SECRET_BYTES} bytes each")


def load_or_create(data_dir: Path) -> ServerSecrets:
    """Read the secrets, creating any that are missing.

    Safe when several processes start at once: a file is published complete
    with ``link()``, which never replaces an existing file, and the loser reads
    the winner's file.
    """
    directory = data_dir / SECRETS_DIRNAME
    _ensure_directory(directory)
    return ServerSecrets(
        hmac_key=_load_or_create_file(directory / HMAC_KEY_FILENAME),
        encryption_key=_load_or_create_file(directory / ENCRYPTION_KEY_FILENAME),
    )


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


def _create(path: Path) -> bytes:
    value = secrets.token_bytes(SECRET_BYTES)
    # Write a private temporary file completely, then link it into place: readers
    # never see a half-written secret, and link() fails instead of overwriting.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # exactly, whatever the umask
            file.write(base64.b64encode(value) + b"\n")
            file.flush()
            os.fsync(file.fileno())
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
    try:
        value = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        value = b""
    if len(value) != SECRET_BYTES:
        raise CredentialConfigError(
            f"{path} does not hold a base64-encoded {SECRET_BYTES}-byte secret; restore it "
            "from a backup, or delete it to create a new one (deleting hmac.key invalidates "
            "every stream key; deleting encryption.key stops existing keys being revealed)"
        )
    return value


def _fsync_directory(directory: Path) -> None:
    """Make the new directory entry durable, so a crash cannot lose a secret in use."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
