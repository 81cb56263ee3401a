"""The webhook routes: admins only, the secret shown once, the delivery log and redelivery."""

from __future__ import annotations

from sqlalchemy import select, update

from stream_sync.db.models import Channel, Role, WebhookDelivery
from stream_sync.state import outbox
from stream_sync.state.interfaces import StatusChanged
from stream_sync.webhooks.fanout import Fanout
from stream_sync.webhooks.policy import RetryPolicy

from .conftest import Api


async def test_only_admins_manage_webhooks(api: Api) -> None:
    streamer = await api.signed_in("s@example.com")
    for method, path in [
        ("GET", "/api/webhooks"),
        ("POST", "/api/webhooks"),
        ("DELETE", "/api/webhooks/1"),
        ("GET", "/api/webhooks/1/deliveries"),
        ("POST", "/api/webhook-deliveries/1/redeliver"),
    ]:
        response = await streamer.request(method, path, json={"url": "https://example.com/h"})
        assert response.status_code == 403, (method, path, response.text)
    anonymous = api.client()
    assert (await anonymous.get("/api/webhooks")).status_code == 401


async def test_register_list_pause_and_delete(api: Api) -> None:
    admin = await api.signed_in("a@example.com", Role.ADMIN)
    created = await admin.post(
        "/api/webhooks", json={"url": "https://example.com/in", "events": ["stream.live"]}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert body["events"] == ["stream.live"]
    listed = (await admin.get("/api/webhooks")).json()
    assert [e["id"] for e in listed] == [body["id"]]
    assert "secret" not in listed[0]  # shown once
    assert body["secret"] not in (await admin.get(f"/api/webhooks/{body['id']}")).text
    paused = await admin.patch(f"/api/webhooks/{body['id']}", json={"enabled": False})
    assert paused.json()["enabled"] is False
    assert (await admin.delete(f"/api/webhooks/{body['id']}")).status_code == 204
    missing = await admin.get(f"/api/webhooks/{body['id']}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "webhook_endpoint_not_found"


async def test_bad_input_is_one_clear_error(api: Api) -> None:
    admin = await api.signed_in("a@example.com", Role.ADMIN)
    bad_url = await admin.post("/api/webhooks", json={"url": "ftp://hooks.example.com/x"})
    assert bad_url.status_code == 422
    assert bad_url.json()["error"]["code"] == "invalid_webhook_endpoint"
    assert "hooks.example.com" not in bad_url.text
    bad_event = await admin.post(
        "/api/webhooks", json={"url": "https://example.com/", "events": ["stream.started"]}
    )
    assert bad_event.status_code == 422
    short = await admin.post("/api/webhooks", json={"url": "https://example.com/", "secret": "x"})
    assert short.status_code == 422


async def test_the_delivery_log_and_redelivery(api: Api) -> None:
    admin = await api.signed_in("a@example.com", Role.ADMIN)
    channel = await api.channel(admin, "demo", None)
    hook = (await admin.post("/api/webhooks", json={"url": "https://example.com/in"})).json()
    sessions = api.context.sessions
    async with sessions() as session, session.begin():
        channel_id = await session.scalar(select(Channel.id))
        assert channel_id is not None
        await outbox.stage(session, StatusChanged(channel_id, "live", None, 1_800_000_000.0))
    assert await Fanout(sessions, policy=RetryPolicy()).run_once() == 1
    async with sessions() as session, session.begin():
        await session.execute(
            update(WebhookDelivery).values(
                status="failed", attempts=32, last_status=500, last_error="HTTP 500"
            )
        )
    log = (await admin.get(f"/api/webhooks/{hook['id']}/deliveries?status=failed")).json()
    assert [(d["type"], d["status"], d["attempts"], d["last_error"]) for d in log] == [
        ("stream.live", "failed", 32, "HTTP 500")
    ]
    assert (await admin.get(f"/api/webhooks/{hook['id']}/deliveries?status=pending")).json() == []
    detail = (await admin.get(f"/api/webhook-deliveries/{log[0]['id']}")).json()
    assert detail["payload"]["channel"]["public_id"] == channel["id"]
    assert detail["payload"]["id"] == detail["event_id"]
    again = await admin.post(f"/api/webhook-deliveries/{log[0]['id']}/redeliver")
    assert again.status_code == 200, again.text
    assert (again.json()["status"], again.json()["attempts"]) == ("pending", 32)
    assert again.json()["next_attempt_at"] is not None
    gone = await admin.post("/api/webhook-deliveries/999999/redeliver")
    assert gone.status_code == 404
