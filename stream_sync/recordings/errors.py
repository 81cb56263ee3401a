"""Recording errors; codes and statuses as in ``stream_sync.errors``."""

from __future__ import annotations

from stream_sync.errors import DomainError


class RecordingNotFound(DomainError):
    code = "recording_not_found"
    status = 404


class RecordingFileMissing(DomainError):
    """The row is there, its file is not (deleted by hand, a lost disk)."""

    code = "recording_file_missing"
    status = 410


class RecordingUnavailable(DomainError):
    """The file is on a node that cannot serve it now (stopped, unreachable)."""

    code = "recording_unavailable"
    status = 503
    retry_after = 30


class RecordingInProgress(DomainError):
    code = "recording_in_progress"
    status = 409
