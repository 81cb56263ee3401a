"""A channel's switches: its reconnect grace period, test mode, and whether it is recorded."""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .. import audit
from ..db.models import Channel

_UNSET: Any = object()


class ChannelSwitches(NamedTuple):
    grace_seconds: int | None  # None: the server's default
    test_mode: bool
    record: bool  # ingest/recording.py writes its sessions to disk


async def monitor_settings(session: AsyncSession, *, channel_id: int) -> ChannelSwitches:
    """The channel's switches (all off for a channel that is gone). Read-only."""
    async with session.begin():
        row = (
            await session.execute(
                select(Channel.grace_seconds, Channel.test_mode, Channel.record).where(
                    Channel.id == channel_id
                )
            )
        ).one_or_none()
    if row is None:
        return ChannelSwitches(None, False, False)
    return ChannelSwitches(row[0], bool(row[1]), bool(row[2]))


async def set_monitor_settings(
    session: AsyncSession,
    *,
    channel_id: int,
    actor: audit.Actor,
    grace_seconds: int | None = _UNSET,
    test_mode: bool | None = _UNSET,
    record: bool | None = _UNSET,
) -> None:
    """Change what was given, with its audit row; the next session uses it. Commits.

    ``record`` also applies to a live stream once its node hears of it
    (``ControlPlane.outputs_changed``, after this commit).
    """
    values: dict[str, Any] = {}
    if grace_seconds is not _UNSET:
        values["grace_seconds"] = grace_seconds
    if test_mode is not _UNSET and test_mode is not None:
        values["test_mode"] = test_mode
    if record is not _UNSET and record is not None:
        values["record"] = record
    if not values:
        return
    async with session.begin():
        await session.execute(update(Channel).where(Channel.id == channel_id).values(**values))
        audit.add_entry(
            session,
            action=audit.AuditAction.CHANNEL_SETTINGS_CHANGED,
            actor=actor,
            channel_id=channel_id,
            details=values,
        )
