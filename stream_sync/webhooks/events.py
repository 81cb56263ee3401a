"""Which outbox events become which webhooks, and the JSON body each delivery carries.

Pure: an outbox event in, a webhook type and its ``data`` out (or None: not a
webhook). The body adds what every delivery has: the event id (a UUID, the same
for every endpoint, for deduplication), the type, when the change was committed,
the channel and its sequence number. ``seq`` comes from the outbox: it grows per
channel in commit order, so receivers order a channel's events by it. It has gaps,
the channel's events that are not webhooks (publish starts and ends, revocations).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from stream_sync.state.interfaces import (
    BusEvent,
    HealthChanged,
    PublishRefusalsCounted,
    StatusChanged,
    StreamKeyReset,
)

__all__ = ["ALL_EVENTS", "ChannelRef", "WebhookEvent", "body", "iso", "stamp", "webhook_of"]


class WebhookEvent(StrEnum):
    STREAM_LIVE = "stream.live"
    STREAM_RECONNECTING = "stream.reconnecting"
    STREAM_OFFLINE = "stream.offline"
    STREAM_HEALTH_CHANGED = "stream.health_changed"
    KEY_RESET = "key.reset"
    PUBLISH_REFUSED = "publish.refused"


ALL_EVENTS: tuple[WebhookEvent, ...] = tuple(WebhookEvent)
# Statuses announced; "testing" is never announced (test mode exists to rehearse
# without anyone being told), and the fan-out drops the rest of a test session too.
_STATUS_EVENTS = {
    "live": WebhookEvent.STREAM_LIVE,
    "reconnecting": WebhookEvent.STREAM_RECONNECTING,
    "offline": WebhookEvent.STREAM_OFFLINE,
}


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """The channel as receivers know it; name and public id are None once it is deleted."""

    id: int
    public_id: str | None = None
    name: str | None = None


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds, e.g. 2027-01-12T10:00:00.250Z."""
    if epoch is None:
        return None
    return stamp(datetime.fromtimestamp(epoch, UTC))


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def webhook_of(event: BusEvent) -> tuple[WebhookEvent, dict[str, Any]] | None:
    """The webhook an outbox event is, with its ``data``; None for the others."""
    if isinstance(event, StatusChanged):
        kind = _STATUS_EVENTS.get(event.status)
        if kind is None:
            return None
        return kind, {
            "status": event.status,
            "session_id": event.session_id,
            "at": iso(event.at),
            "grace_until": iso(event.grace_until),
            "reason": event.reason,
        }
    if isinstance(event, StreamKeyReset):
        return WebhookEvent.KEY_RESET, {
            "key_id": event.key_id,
            "revoked_key_ids": list(event.revoked_key_ids),
        }
    if isinstance(event, PublishRefusalsCounted):
        return WebhookEvent.PUBLISH_REFUSED, {
            "key_id": event.key_id,
            "address": event.address,
            "reason": event.reason,
            "count": event.count,
            "minute": iso(event.minute),
        }
    if isinstance(event, HealthChanged):
        return WebhookEvent.STREAM_HEALTH_CHANGED, {
            "session_id": event.session_id,
            "overall": event.overall,
            "previous": event.previous,
            "issues": list(event.issues),
            "at": iso(event.at),
        }
    return None


def body(
    *,
    event_id: str,
    kind: WebhookEvent,
    created_at: datetime,
    channel: ChannelRef | None,
    seq: int | None,
    data: dict[str, Any],
) -> str:
    """The delivery's JSON, compact; stored once and sent as is on every attempt."""
    document = {
        "id": event_id,
        "type": str(kind),
        "created_at": stamp(created_at),
        "channel": None
        if channel is None
        else {"id": channel.id, "public_id": channel.public_id, "name": channel.name},
        "seq": seq,
        "data": data,
    }
    return orjson.dumps(document).decode()
