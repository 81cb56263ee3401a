"""Stream keys and the server secrets that protect them."""

from stream_sync.credentials.crypto import decrypt_key, encrypt_key
from stream_sync.credentials.errors import (
    ChannelExists,
    ChannelNotFound,
    ConcurrentChange,
    CredentialConfigError,
    CredentialError,
    InvalidChannelName,
    KeyDecryptionError,
    NoActiveKey,
)
from stream_sync.credentials.keys import (
    GeneratedKey,
    generate_key,
    key_hash,
    mask_key,
    parse_key_id,
    redact,
)
from stream_sync.credentials.server_secrets import ServerSecrets, load_or_create
from stream_sync.credentials.service import (
    ChannelSummary,
    CreatedChannel,
    KeyCheck,
    KeyReset,
    RefusalReason,
    create_channel,
    list_channels,
    mark_used,
    reset_key,
    reveal_key,
    validate_channel_name,
    verify_key,
)

__all__ = [
    "ChannelExists",
    "ChannelNotFound",
    "ChannelSummary",
    "ConcurrentChange",
    "CreatedChannel",
    "CredentialConfigError",
    "CredentialError",
    "GeneratedKey",
    "InvalidChannelName",
    "KeyCheck",
    "KeyDecryptionError",
    "KeyReset",
    "NoActiveKey",
    "RefusalReason",
    "ServerSecrets",
    "create_channel",
    "decrypt_key",
    "encrypt_key",
    "generate_key",
    "key_hash",
    "list_channels",
    "load_or_create",
    "mark_used",
    "mask_key",
    "parse_key_id",
    "redact",
    "reset_key",
    "reveal_key",
    "validate_channel_name",
    "verify_key",
]
