"""Control-plane operations that span the database and the event bus.

The database commits first, then the bus hears about it: a consumer that missed
the event can still find the truth in the database (see docs/architecture.md).
The CLI, the admin socket and the HTTP API all call these.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .credentials import service
from .credentials.server_secrets import ServerSecrets
from .state.interfaces import EventBus, KeyRevoked


async def reset_channel_key(
    *,
    sessions: async_sessionmaker[AsyncSession],
    secrets: ServerSecrets,
    bus: EventBus | None,
    channel_name: str,
) -> service.KeyReset:
    async with sessions() as session:
        result = await service.reset_key(session, secrets=secrets, channel_name=channel_name)
    if bus is not None and result.revoked_key_id is not None:
        await bus.publish(KeyRevoked(result.channel_id, result.revoked_key_id))
    return result
