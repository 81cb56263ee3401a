"""Control-plane operations that span the database and the event bus.

The database commits first, then the bus hears about it: a consumer that missed
the event can still find the truth in the database (see docs/architecture.md).
The HTTP API, the CLI and the admin socket all act through `ControlPlane`, so a
key reset means the same thing wherever it starts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .accounts import users
from .audit import Actor, AuditAction, add_entry
from .credentials import service
from .credentials.server_secrets import ServerSecrets
from .db.models import Role
from .servers import service as servers
from .servers.errors import ServerNotFound
from .state.errors import StateUnavailable
from .state.interfaces import (
    DrainRequested,
    EventBus,
    KeyRevoked,
    OutputsChanged,
    StopRequested,
)

log = logging.getLogger("stream_sync")


class Tombstones(Protocol):
    async def revoked(self, key_id: str, channel_id: int | None = None) -> None: ...


class ControlPlane:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        secrets: ServerSecrets,
        bus: EventBus | None,
        checker: Tombstones | None = None,
    ) -> None:
        self.sessions = sessions
        self.secrets = secrets
        self.bus = bus  # None when nobody could be listening (CLI with no server running)
        self.checker = checker  # the key cache: tombstoned so no node admits a revoked key

    async def _revoked(self, pairs: list[tuple[int, str]]) -> None:
        """After the commit: tombstone the cache, then tell every node to cut publishers.

        The KeyRevoked rows are in the database outbox already; if the bus is down,
        nodes still find out when they recheck their live publishers' keys.
        """
        for channel_id, key_id in pairs:
            if self.checker is not None:
                await self.checker.revoked(key_id, channel_id)
        if self.bus is None:
            return
        for channel_id, key_id in pairs:
            await self._announce(KeyRevoked(channel_id, key_id))

    async def outputs_changed(self, channel_id: int) -> None:
        """After a commit that changed a channel's push targets or record switch: the
        node holding its live stream applies it now (the next publish reads it anyway)."""
        await self._announce(OutputsChanged(channel_id))

    async def _announce(
        self, event: KeyRevoked | StopRequested | DrainRequested | OutputsChanged
    ) -> None:
        if self.bus is None:
            return
        try:
            await self.bus.publish(event)
        except StateUnavailable as exc:
            log.warning("event bus unreachable; %s not announced: %s", type(event).__name__, exc)

    async def kick(self, *, channel_id: int, actor: Actor) -> None:
        """End a channel's live publish without touching its key: the encoder may reconnect."""
        async with self.sessions() as session, session.begin():
            add_entry(session, action=AuditAction.STREAM_KICKED, actor=actor, channel_id=channel_id)
        await self._announce(StopRequested(channel_id, "kicked"))

    async def drain(self, *, node: str, deadline_seconds: float, actor: Actor) -> None:
        """Stop admitting on node; capable publishers move, the rest close at the deadline."""
        async with self.sessions() as session:
            with contextlib.suppress(ServerNotFound):
                server = await servers.get_server(session, ref=node)
                async with self.sessions() as update:
                    await servers.update_server(
                        update, server_id=server.id, actor=actor, draining=True
                    )
        await self._announce(DrainRequested(node, time.time() + deadline_seconds))

    async def reset_key(self, *, channel_id: int, actor: Actor) -> service.KeyReset:
        """New key; every old one is refused and publishers using one are cut at once."""
        async with self.sessions() as session:
            result = await service.reset_key(
                session, secrets=self.secrets, channel_id=channel_id, actor=actor
            )
        await self._revoked([(channel_id, key_id) for key_id in result.revoked_key_ids])
        return result

    async def rotate_key(
        self, *, channel_id: int, actor: Actor, overlap: timedelta
    ) -> service.KeyRotation:
        """New key; the old one keeps working (and publishing) until the overlap ends.

        Rotating again during an overlap revokes the oldest key: that one is cut.
        """
        async with self.sessions() as session:
            result = await service.rotate_key(
                session, secrets=self.secrets, channel_id=channel_id, actor=actor, overlap=overlap
            )
        await self._revoked([(channel_id, key_id) for key_id in result.revoked_key_ids])
        return result

    async def revoke_keys(self, *, channel_id: int, actor: Actor) -> tuple[str, ...]:
        async with self.sessions() as session:
            revoked = await service.revoke_keys(session, channel_id=channel_id, actor=actor)
        await self._revoked([(channel_id, key_id) for key_id in revoked])
        return revoked

    async def delete_channel(self, *, channel_id: int, actor: Actor) -> None:
        async with self.sessions() as session:
            revoked = await service.delete_channel(session, channel_id=channel_id, actor=actor)
        await self._revoked([(channel_id, key_id) for key_id in revoked])

    async def disable_user(self, *, user_id: int, actor: Actor) -> users.UserInfo:
        """The user can no longer sign in, and their stream keys stop working now."""
        async with self.sessions() as session:
            info = await users.disable_user(session, user_id=user_id, actor=actor)
        async with self.sessions() as session:
            revoked = await service.revoke_owner_keys(session, owner_id=user_id, actor=actor)
        await self._revoked(revoked)
        return info

    async def delete_user(self, *, user_id: int, actor: Actor) -> None:
        """Delete the account; its channels stay (for an admin to hand over) without keys.

        The delete comes first, so a refusal (the last admin) leaves every key working.
        """
        async with self.sessions() as session:
            owned = await service.list_channels(session, owner_id=user_id)
        async with self.sessions() as session:
            await users.delete_user(session, user_id=user_id, actor=actor)
        revoked: list[tuple[int, str]] = []
        for channel in owned:
            async with self.sessions() as session:
                keys = await service.revoke_keys(
                    session, channel_id=channel.channel_id, actor=actor
                )
            revoked += [(channel.channel_id, key_id) for key_id in keys]
        await self._revoked(revoked)

    async def create_user(
        self, *, email: str, password: str, role: Role, actor: Actor
    ) -> users.UserInfo:
        """The first admin also becomes the owner of channels made before any account."""
        async with self.sessions() as session:
            info = await users.create_user(
                session, email=email, password=password, role=role, actor=actor
            )
        if role is Role.ADMIN:
            async with self.sessions() as session:
                if await users.count_admins(session) == 1:
                    async with self.sessions() as assign:
                        await service.assign_orphan_channels(assign, owner_id=info.id)
        return info
