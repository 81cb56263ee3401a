"""Who may connect and publish: the application's answer to the core's questions.

The protocol core only asks; this module decides, from the stream key (checked
against the credential store) and the one-publisher-per-channel lock. Refusals
carry a machine-readable reason for logs and metrics and a description that the
encoder shows its user (FFmpeg prints it as "Server error: ...").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..credentials import service
from ..credentials.keys import parse_key_id
from ..credentials.server_secrets import ServerSecrets
from ..rtmp.events import ConnectRequested
from ..rtmp.messages import StatusCode
from ..state.interfaces import Lease, PublishLocks

MAX_NAME_LENGTH = 256


@dataclass(frozen=True, slots=True)
class PublishGrant:
    channel_id: int
    channel_name: str
    key_id: str
    lease: Lease


@dataclass(frozen=True, slots=True)
class PublishRefusal:
    reason: str  # malformed_key, unknown_key, revoked_key, expired_key, channel_live, unavailable
    description: str  # shown by the encoder; never contains the key
    key_id: str | None = None
    channel_id: int | None = None  # known for revoked and expired keys
    code: str = StatusCode.PUBLISH_BAD_NAME


class Admission(Protocol):
    def check_connect(self, request: ConnectRequested) -> str | None:
        """A refusal description, or None to accept the connection."""

    async def admit_publish(self, name: str, *, owner: str) -> PublishGrant | PublishRefusal: ...

    async def release(self, grant: PublishGrant) -> None: ...


def stream_key_of(name: str) -> str:
    """The key inside a publish name: encoders may append a query string or stray spaces."""
    return name.split("?", 1)[0].strip()


def app_name_of(app: str) -> str:
    return app.split("?", 1)[0].strip().strip("/")


class KeyAdmission:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        secrets: ServerSecrets,
        locks: PublishLocks,
        app: str,
    ) -> None:
        self._sessions = sessions
        self._secrets = secrets
        self._locks = locks
        self._app = app

    def check_connect(self, request: ConnectRequested) -> str | None:
        app = app_name_of(request.app)
        if app != self._app:
            shown = app[:64] if app.isprintable() else "?"
            return f"Unknown application '{shown}'; use the server URL rtmp://<host>/{self._app}"
        return None

    async def admit_publish(self, name: str, *, owner: str) -> PublishGrant | PublishRefusal:
        key = stream_key_of(name[: MAX_NAME_LENGTH + 1])
        key_id = parse_key_id(key)
        if key_id is None:
            return PublishRefusal("malformed_key", "Invalid stream key.")
        async with self._sessions() as session:
            check = await service.verify_key(session, secrets=self._secrets, presented=key)
        if not check.ok or check.channel_id is None or check.channel_name is None:
            reason = f"{check.reason}_key" if check.reason else "unknown_key"
            return PublishRefusal(reason, "Invalid stream key.", key_id, check.channel_id)
        lease = await self._locks.acquire(check.channel_id, owner)
        if lease is None:
            return PublishRefusal(
                "channel_live",
                "This channel is already live from another encoder.",
                key_id,
                check.channel_id,
            )
        async with self._sessions() as session:
            await service.mark_used(session, key_id=key_id)
        return PublishGrant(check.channel_id, check.channel_name, key_id, lease)

    async def release(self, grant: PublishGrant) -> None:
        await self._locks.release(grant.lease)
