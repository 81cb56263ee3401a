"""Errors of push targets and recordings the API can show; none repeats a stream key."""

from __future__ import annotations

from stream_sync.errors import DomainError


class OutputError(DomainError):
    code = "output_error"
    status = 400


class InvalidPushTarget(OutputError):
    code = "invalid_push_target"
    status = 422


class PushTargetNotFound(OutputError):
    code = "push_target_not_found"
    status = 404


class TooManyPushTargets(OutputError):
    code = "too_many_push_targets"
    status = 409


class PushKeyUnreadable(OutputError):
    """The stored key does not decrypt with any known server secret."""

    code = "push_key_unreadable"
    status = 500


class RecordingNotFound(OutputError):
    code = "recording_not_found"
    status = 404
