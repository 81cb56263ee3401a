"""Webhook errors the API and the CLI can show; messages never echo a URL or a secret.

Endpoint URLs are often credentials themselves (chat services put a token in the
path), so an error names the endpoint by id, never by URL.
"""

from __future__ import annotations

from stream_sync.errors import DomainError


class WebhookError(DomainError):
    code = "webhook_error"
    status = 400


class InvalidEndpoint(WebhookError):
    code = "invalid_webhook_endpoint"
    status = 422


class EndpointNotFound(WebhookError):
    code = "webhook_endpoint_not_found"
    status = 404


class DeliveryNotFound(WebhookError):
    code = "webhook_delivery_not_found"
    status = 404


class SecretUnreadable(WebhookError):
    """The stored signing secret does not decrypt with any known server secret."""

    code = "webhook_secret_unreadable"
    status = 500
