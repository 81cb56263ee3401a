"""Bus events to and from JSON-safe dicts, for anything that crosses a process boundary."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import DomainError
from .interfaces import (
    BusEvent,
    DrainRequested,
    HealthChanged,
    KeyRevoked,
    NodeLost,
    NodeUp,
    OutputsChanged,
    PublishEnded,
    PublishRefusalsCounted,
    PublishRefused,
    PublishStarted,
    RecordingDeleted,
    StatusChanged,
    StopRequested,
    StreamKeyReset,
    StreamStats,
    ThumbnailsWanted,
)

EVENT_TYPES: dict[str, type[BusEvent]] = {
    cls.__name__: cls
    for cls in (
        KeyRevoked,
        PublishStarted,
        PublishEnded,
        PublishRefused,
        StopRequested,
        DrainRequested,
        NodeUp,
        NodeLost,
        StreamStats,
        StatusChanged,
        StreamKeyReset,
        PublishRefusalsCounted,
        HealthChanged,
        ThumbnailsWanted,
        OutputsChanged,
        RecordingDeleted,
    )
}


class UnknownEvent(DomainError):
    code = "bad_event"
    status = 400


def encode_event(event: BusEvent) -> dict[str, Any]:
    """Events hold JSON-safe values already: a shallow dict, not asdict's deep copy."""
    data: dict[str, Any] = {"type": type(event).__name__}
    for name in field_names(type(event)):
        data[name] = getattr(event, name)
    return data


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    """A dataclass's field names (empty for any other class), looked up once per class."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = (
            tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else ()
        )
        _FIELD_NAMES[cls] = names
    return names


def decode_event(data: Any, allowed: frozenset[str] | None = None) -> BusEvent:
    """Rebuild an event; only known types with exactly their fields are accepted."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise UnknownEvent("an event is an object with a type")
    name = data["type"]
    cls = EVENT_TYPES.get(name)
    if cls is None or (allowed is not None and name not in allowed):
        raise UnknownEvent(f"event type {name[:64]!r} is not accepted here")
    required, known = _shape(cls)
    if not required <= data.keys() <= known:
        raise UnknownEvent(f"{name} needs the fields {sorted(required - {'type'})}")
    values = dict(data)
    del values["type"]
    try:
        return cls(**values)
    except TypeError:
        raise UnknownEvent(f"{name} with fields of the wrong shape") from None


_SHAPES: dict[type, tuple[frozenset[str], frozenset[str]]] = {}


def _shape(cls: type) -> tuple[frozenset[str], frozenset[str]]:
    """The keys an event's dict must have, and those it may have, worked out once per type
    (the monitor decodes every live stream's statistics every second)."""
    shape = _SHAPES.get(cls)
    if shape is None:
        fields = dataclasses.fields(cls)
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        shape = _SHAPES[cls] = (
            frozenset({"type", *required}),
            frozenset({"type", *(f.name for f in fields)}),
        )
    return shape
