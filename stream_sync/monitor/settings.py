"""A channel's monitor switches: its reconnect grace period and test mode."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .. import audit
from ..db.models import Channel

_UNSET: Any = object()


async def monitor_settings(session: AsyncSession, *, channel_id: int) -> tuple[int | None, bool]:
    """(grace seconds or None for the default, test mode). Read-only."""
    async with session.begin():
        row = (
            await session.execute(
                select(Channel.grace_seconds, Channel.test_mode).where(Channel.id == channel_id)
            )
        ).one_or_none()
    return (None, False) if row is None else (row[0], bool(row[1]))


async def set_monitor_settings(
    session: AsyncSession,
    *,
    channel_id: int,
    actor: audit.Actor,
    grace_seconds: int | None = _UNSET,
    test_mode: bool | None = _UNSET,
) -> None:
    """Change what was given, with its audit row; the next session uses it. Commits."""
    values: dict[str, Any] = {}
    if grace_seconds is not _UNSET:
        values["grace_seconds"] = grace_seconds
    if test_mode is not _UNSET and test_mode is not None:
        values["test_mode"] = test_mode
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
