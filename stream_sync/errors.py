"""The base of every domain error the CLI, the API and the admin socket can show.

``code`` is stable and machine-readable (API responses); ``status`` is the HTTP
status the API answers with. Messages are safe to show and to log: they never
contain a password, token or key.
"""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    code: ClassVar[str] = "domain_error"
    status: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
