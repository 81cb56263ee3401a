"""Ingest server catalog errors; codes and statuses as in ``stream_sync.errors``."""

from __future__ import annotations

from stream_sync.errors import DomainError


class ServerError(DomainError):
    code = "ingest_server_error"
    status = 400


class ServerNotFound(ServerError):
    code = "ingest_server_not_found"
    status = 404


class ServerExists(ServerError):
    code = "ingest_server_exists"
    status = 409


class InvalidServer(ServerError):
    """A name, URL, region or capacity outside what the catalog accepts."""

    code = "invalid_ingest_server"
    status = 422
