"""Credential errors that the CLI, the API and the admin socket can all show.

Each carries a stable machine-readable ``code`` for API responses. Messages are
safe to show to users and to log: they never contain a key or secret material,
and they do not echo user input that could be a pasted key.
"""

from __future__ import annotations

from typing import ClassVar


class CredentialError(Exception):
    code: ClassVar[str] = "credential_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# The domain names below are the public API; ruff's N818 wants an "Error" suffix.
class ChannelNotFound(CredentialError):  # noqa: N818
    code = "channel_not_found"


class ChannelExists(CredentialError):  # noqa: N818
    code = "channel_exists"


class InvalidChannelName(CredentialError):  # noqa: N818
    code = "invalid_channel_name"


class NoActiveKey(CredentialError):  # noqa: N818
    """The channel exists but has no key to reveal (every key was revoked)."""

    code = "no_active_key"


class ConcurrentChange(CredentialError):  # noqa: N818
    """Another writer changed the same channel at the same moment; retrying is safe."""

    code = "concurrent_change"


class CredentialConfigError(CredentialError):
    """The server's own secret files are missing, unreadable or unsafe."""

    code = "credential_config"


class KeyDecryptionError(CredentialError):
    """A stored key cannot be decrypted: the encryption key changed or the row is corrupt."""

    code = "key_decryption_failed"
