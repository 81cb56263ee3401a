"""HTTP-only errors, and the one place where every error becomes JSON.

Services raise domain errors that know their status and code; routes never build
error responses themselves. Nothing here returns a traceback or echoes a secret.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..db.engine import CONNECTING_ERRORS, unreachable
from ..errors import DomainError

log = logging.getLogger("stream_sync.api")


class Unauthenticated(DomainError):
    code = "unauthenticated"
    status = 401


class Forbidden(DomainError):
    code = "forbidden"
    status = 403


class CsrfFailed(DomainError):
    code = "csrf_failed"
    status = 403


class NotFound(DomainError):
    code = "not_found"
    status = 404


class DatabaseUnavailable(DomainError):
    code = "database_unavailable"
    status = 503
    retry_after = 5


class SharedStateUnavailable(DomainError):
    """Redis is down: what lives only there (live pictures) cannot be read now."""

    code = "state_unavailable"
    status = 503
    retry_after = 5


class PreviewUnavailable(DomainError):
    code = "preview_unavailable"
    status = 503


class PreviewUnsupported(DomainError):
    code = "preview_unsupported"
    status = 409


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        headers = {}
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float):
            headers["Retry-After"] = str(max(1, round(retry_after)))
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=exc.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {
                "field": ".".join(str(part) for part in error.get("loc", ()) if part != "body"),
                "message": str(error.get("msg", "invalid")),
            }
            for error in exc.errors()
        ]
        return JSONResponse(
            error_body("invalid_request", "the request is not valid", fields=fields),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    async def outage(request: Request, exc: Exception) -> JSONResponse:
        """An outage, not a bug: one log line, and a 503 that asks to retry."""
        if not unreachable(exc):
            raise exc  # to the handler of everything unexpected
        log.warning(
            "%s %s: the database is unreachable (%s)",
            request.method,
            request.url.path,
            type(exc).__name__,
        )
        return await domain_error(
            request, DatabaseUnavailable("the database is unreachable; try again shortly")
        )

    outages: tuple[type[Exception], ...] = (DBAPIError, *CONNECTING_ERRORS)
    for kind in outages:
        app.add_exception_handler(kind, outage)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal", "internal server error"), status_code=500)
