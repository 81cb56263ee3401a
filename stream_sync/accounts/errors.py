"""Account errors the API, the CLI and the admin socket can show as they are.

Messages never contain a password, a token or the text a user typed into a
password field, and sign-in failures never say whether the account exists.
"""

from __future__ import annotations

import math

from stream_sync.errors import DomainError


class UserNotFound(DomainError):
    code = "user_not_found"
    status = 404


class UserExists(DomainError):
    code = "user_exists"
    status = 409


class InvalidEmail(DomainError):
    code = "invalid_email"
    status = 422


class WeakPassword(DomainError):
    code = "weak_password"
    status = 422


class InvalidCredentials(DomainError):
    """Wrong password, unknown email and disabled account all look the same."""

    code = "invalid_credentials"
    status = 401

    def __init__(self, message: str = "wrong email or password") -> None:
        super().__init__(message)


class AccountDisabled(DomainError):
    """For operations on a known account (never at sign-in, which says InvalidCredentials)."""

    code = "account_disabled"
    status = 403


class TooManyAttempts(DomainError):
    code = "too_many_attempts"
    status = 429

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(f"too many sign-in attempts; try again in {seconds} seconds")
        self.retry_after = retry_after


class InvalidResetToken(DomainError):
    """Unknown, used, expired or malformed: the caller learns nothing about which."""

    code = "invalid_reset_token"
    status = 400


class TokenNotFound(DomainError):
    code = "token_not_found"
    status = 404


class InvalidTokenName(DomainError):
    code = "invalid_token_name"
    status = 422


class LastAdmin(DomainError):
    """Refused so the installation always keeps one enabled admin."""

    code = "last_admin"
    status = 409
