"""Registering endpoints: validation, the secret kept encrypted, rotation, removal."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync import audit
from stream_sync.credentials import ServerSecrets
from stream_sync.db.models import AuditEntry, WebhookDelivery, WebhookEndpoint, utcnow
from stream_sync.webhooks import endpoints
from stream_sync.webhooks.errors import EndpointNotFound, InvalidEndpoint, SecretUnreadable
from stream_sync.webhooks.events import ALL_EVENTS

ACTOR = audit.Actor.cli()


async def _stored(sessions: async_sessionmaker[AsyncSession], endpoint_id: int) -> bytes:
    async with sessions() as session:
        blob = await session.scalar(
            select(WebhookEndpoint.secret_ciphertext).where(WebhookEndpoint.id == endpoint_id)
        )
    assert blob is not None
    return blob


async def test_a_generated_secret_is_shown_once_and_stored_encrypted(
    sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> None:
    async with sessions() as session:
        created = await endpoints.create_endpoint(
            session, secrets=server_secrets, url="https://example.com/hooks?team=7", actor=ACTOR
        )
    assert created.secret.startswith("whsec_")
    assert len(created.secret) == 49
    assert created.endpoint.events == tuple(e.value for e in ALL_EVENTS)
    blob = await _stored(sessions, created.endpoint.id)
    assert created.secret.encode() not in blob
    assert endpoints.decrypt_secret(server_secrets, created.endpoint.id, blob) == created.secret
    with pytest.raises(SecretUnreadable):  # bound to its row: another id does not decrypt it
        endpoints.decrypt_secret(server_secrets, created.endpoint.id + 1, blob)
    async with sessions() as session:
        listed = await endpoints.list_endpoints(session)
        details = await session.scalar(
            select(AuditEntry.details).where(AuditEntry.action == "webhook.created")
        )
    assert listed == [created.endpoint]
    assert details == {"endpoint_id": created.endpoint.id, "host": "example.com",
                       "events": list(created.endpoint.events)}  # fmt: skip


async def test_a_given_secret_and_event_filter_are_kept(
    sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> None:
    async with sessions() as session:
        created = await endpoints.create_endpoint(
            session,
            secrets=server_secrets,
            url="http://127.0.0.1:9000/in",
            actor=ACTOR,
            events=["stream.live", "stream.offline", "stream.live"],
            secret="my-own-secret-of-enough-length",
            description="  chat bot  ",
        )
    assert created.secret == "my-own-secret-of-enough-length"
    assert created.endpoint.events == ("stream.live", "stream.offline")
    assert created.endpoint.description == "chat bot"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "ftp://example.com/x"}, "http:// or https://"),
        ({"url": "https://user:pw@example.com/"}, "user name or password"),
        ({"url": "https:///nohost"}, "http:// or https://"),
        ({"url": "https://example.com/a b"}, "http:// or https://"),
        ({"url": "https://example.com:0/"}, "port"),
        ({"url": "https://example.com/#frag"}, "fragment"),
        ({"url": "https://example.com/" + "a" * 2048}, "http:// or https://"),
        ({"events": ["stream.started"]}, "unknown event type"),
        ({"events": []}, "at least one"),
        ({"secret": "short"}, "16 to 256"),
        ({"secret": "with a space inside it"}, "no spaces"),
    ],
)
async def test_bad_input_is_refused_with_a_message_that_never_echoes_the_url(
    sessions: async_sessionmaker[AsyncSession],
    server_secrets: ServerSecrets,
    fields: dict[str, object],
    message: str,
) -> None:
    values: dict[str, object] = {"url": "https://example.com/hooks", **fields}
    async with sessions() as session:
        with pytest.raises(InvalidEndpoint, match=message) as raised:
            await endpoints.create_endpoint(
                session,
                secrets=server_secrets,
                actor=ACTOR,
                **values,  # type: ignore[arg-type]
            )
    assert "example.com" not in raised.value.message


async def test_rotation_reencrypts_and_deletion_takes_the_deliveries_along(
    sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> None:
    async with sessions() as session:
        created = await endpoints.create_endpoint(
            session, secrets=server_secrets, url="https://example.com/h", actor=ACTOR
        )
    rotated = ServerSecrets(os.urandom(32), os.urandom(32), previous=(server_secrets,))
    async with sessions() as session:
        assert await endpoints.reencrypt_secrets(session, secrets=rotated) == 1
    only_new = ServerSecrets(rotated.hmac_key, rotated.encryption_key)
    blob = await _stored(sessions, created.endpoint.id)
    assert endpoints.decrypt_secret(only_new, created.endpoint.id, blob) == created.secret

    async with sessions() as session:
        paused = await endpoints.set_enabled(
            session, endpoint_id=created.endpoint.id, enabled=False, actor=ACTOR
        )
        assert not paused.enabled
        async with session.begin():
            session.add(
                WebhookDelivery(
                    endpoint_id=created.endpoint.id, outbox_id=1, event_id="e", type="stream.live",
                    body="{}", status="pending", attempts=0, next_attempt_at=utcnow(),
                    give_up_at=utcnow(), created_at=utcnow(),
                )
            )  # fmt: skip
        await endpoints.delete_endpoint(session, endpoint_id=created.endpoint.id, actor=ACTOR)
        with pytest.raises(EndpointNotFound):
            await endpoints.get_endpoint(session, endpoint_id=created.endpoint.id)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


def test_secrets_are_redacted_for_logs_and_hosts_name_endpoints() -> None:
    secret = endpoints.new_secret()
    assert endpoints.redact_secrets(f"oops {secret}!") == "oops whsec_***!"
    assert endpoints.host_of("https://hooks.example.com/services/T0/B0/XyZ") == "hooks.example.com"
    assert endpoints.host_of("http://[::1]:8080/x") == "[::1]:8080"
