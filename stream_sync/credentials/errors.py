"""Credential errors that the CLI, the API and the admin socket can all show.

Each carries a stable machine-readable ``code`` and an HTTP-ish ``status`` (see
``stream_sync.errors``). Messages are safe to show to users and to log: they never
contain a key or secret material, and they do not echo user input that could be a
pasted key.
"""

from __future__ import annotations

from stream_sync.errors import DomainError


class CredentialError(DomainError):
    code = "credential_error"
    status = 400


class ChannelNotFound(CredentialError):
    code = "channel_not_found"
    status = 404


class ChannelExists(CredentialError):
    code = "channel_exists"
    status = 409


class InvalidChannelName(CredentialError):
    code = "invalid_channel_name"
    status = 422


class OwnerNotFound(CredentialError):
    """A channel was to be given to a user that does not exist."""

    code = "owner_not_found"
    status = 422


class InvalidOverlap(CredentialError):
    """A rotation overlap outside the accepted range."""

    code = "invalid_overlap"
    status = 422


class NoActiveKey(CredentialError):
    """The channel exists but has no key to reveal (every key was revoked)."""

    code = "no_active_key"
    status = 409


class ConcurrentChange(CredentialError):
    """Another writer changed the same channel at the same moment; retrying is safe."""

    code = "concurrent_change"
    status = 409


class CredentialConfigError(CredentialError):
    """The server's own secrets are missing, unreadable or unsafe: the operator's to fix."""

    code = "credential_config"
    status = 500


class KeyDecryptionError(CredentialError):
    """A stored key cannot be decrypted: the encryption key changed or the row is corrupt."""

    code = "key_decryption_failed"
    status = 500
