"""What a live stream feeds besides the monitor, read when its publish starts.

The ingest node asks for many channels at once (a reconnect storm, through
``state.coalesce``): one query for the record switches, one for the targets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from stream_sync.credentials.server_secrets import ServerSecrets
from stream_sync.db.members import one_of
from stream_sync.db.models import Channel
from stream_sync.db.models import PushTarget as PushTargetRow

from .destinations import InvalidTarget, PushTarget
from .errors import PushKeyUnreadable
from .targets import decrypt_target

log = logging.getLogger("stream_sync.outputs")


@dataclass(frozen=True, slots=True)
class ChannelOutputs:
    record: bool = False
    targets: tuple[PushTarget, ...] = ()  # the channel's enabled targets, keys decrypted


NOTHING = ChannelOutputs()


async def load_outputs(
    session: AsyncSession, secrets: ServerSecrets, channel_ids: Sequence[int]
) -> list[ChannelOutputs]:
    """One ChannelOutputs per id, in order. Read-only.

    A target whose key no longer decrypts (a lost server secret) is left out with
    a log line naming its id; the others still go.
    """
    postgresql = session.get_bind().dialect.name == "postgresql"
    wanted = set(channel_ids)
    async with session.begin():
        record = {
            channel_id
            for channel_id, on in await session.execute(
                select(Channel.id, Channel.record).where(
                    one_of(Channel.id, wanted, postgresql=postgresql)
                )
            )
            if on
        }
        rows = await session.scalars(
            select(PushTargetRow)
            .where(
                one_of(PushTargetRow.channel_id, wanted, postgresql=postgresql),
                PushTargetRow.enabled.is_(True),
            )
            .order_by(PushTargetRow.id)
        )
        targets: dict[int, list[PushTarget]] = {}
        for row in rows:
            try:
                targets.setdefault(row.channel_id, []).append(decrypt_target(secrets, row))
            except (PushKeyUnreadable, InvalidTarget) as exc:
                log.error("push target %d of channel %d skipped: %s", row.id, row.channel_id, exc)
    return [
        ChannelOutputs(record=channel_id in record, targets=tuple(targets.get(channel_id, ())))
        for channel_id in channel_ids
    ]
