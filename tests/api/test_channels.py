"""Channels and keys over HTTP: ownership, masking, reveal, reset, rotate, revoke, audit."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import text

from stream_sync.api.context import LiveStream
from stream_sync.credentials import service as credentials
from stream_sync.db.models import Role
from stream_sync.monitor import lifecycle
from stream_sync.state.interfaces import KeyRevoked, PublishStarted

from .conftest import Api


async def verify(api: Api, key: str) -> credentials.KeyCheck:
    async with api.context.sessions() as session:
        return await credentials.verify_key(session, secrets=api.context.secrets, presented=key)


async def test_owner_sees_masked_key_and_reveals_it_with_an_audit_row(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    streamer = await api.signed_in("sam@example.com")
    created = await api.channel(admin, "sams-show", "sam@example.com")
    key = created["stream_key"]
    assert created["server_url"] == "rtmp://ingest.test/live"

    listed = (await streamer.get("/api/channels")).json()
    assert [c["name"] for c in listed] == ["sams-show"]
    detail = (await streamer.get(f"/api/channels/{created['id']}")).json()
    assert detail["key"]["key_id"] == created["key_id"]
    assert detail["key"]["masked"].endswith(key[-4:])
    assert key not in str(detail)
    assert detail["status"] == "offline"

    revealed = await streamer.post(f"/api/channels/{created['id']}/key/reveal")
    assert revealed.json()["stream_key"] == key
    audit = (await streamer.get(f"/api/channels/{created['id']}/audit")).json()
    assert "key.revealed" in [row["action"] for row in audit]
    assert key not in str(audit)


async def test_a_streamer_cannot_touch_another_streamers_channel(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    owner = await api.signed_in("olga@example.com")
    other = await api.signed_in("mallory@example.com")
    channel = await api.channel(admin, "olgas", "olga@example.com")
    base = f"/api/channels/{channel['id']}"
    assert (await owner.get(base)).status_code == 200
    for method, path in [
        ("GET", base),
        ("GET", f"{base}/sessions"),
        ("GET", f"{base}/audit"),
        ("POST", f"{base}/key/reveal"),
        ("POST", f"{base}/key/reset"),
        ("POST", f"{base}/key/rotate"),
        ("POST", f"{base}/key/revoke"),
    ]:
        response = await other.request(method, path)
        assert response.status_code == 404, (method, path)
    assert (await other.get("/api/channels")).json() == []
    assert (await other.post("/api/channels", json={"name": "mine"})).status_code == 403
    assert (await other.get("/api/users")).status_code == 403
    assert (await verify(api, channel["stream_key"])).ok  # nothing happened to the key


async def test_reset_revokes_at_once_and_announces_it(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "resettable", None)
    old = channel["stream_key"]
    response = await admin.post(f"/api/channels/{channel['id']}/key/reset")
    assert response.status_code == 200
    body = response.json()
    assert body["revoked_key_ids"] == [channel["key_id"]]
    assert body["stream_key"] != old
    assert (await verify(api, old)).reason == credentials.RefusalReason.REVOKED
    assert (await verify(api, body["stream_key"])).ok
    event = await api.bus.wait_for(KeyRevoked, timeout=2)
    assert event.key_id == channel["key_id"]


async def test_rotate_keeps_the_old_key_during_the_overlap(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "rotating", None)
    response = await admin.post(
        f"/api/channels/{channel['id']}/key/rotate", json={"overlap_seconds": 300}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["previous_key_id"] == channel["key_id"]
    assert (await verify(api, channel["stream_key"])).ok
    assert (await verify(api, body["stream_key"])).ok
    detail = (await admin.get(f"/api/channels/{channel['id']}")).json()
    assert detail["key"]["rotating_key_ids"] == [channel["key_id"]]
    assert not api.bus.of(KeyRevoked)  # nobody is cut by a rotation


async def test_rotate_without_overlap_expires_the_old_key_at_once(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "no-overlap", None)
    response = await admin.post(
        f"/api/channels/{channel['id']}/key/rotate", json={"overlap_seconds": 0}
    )
    assert (await verify(api, channel["stream_key"])).reason == credentials.RefusalReason.EXPIRED
    assert (await verify(api, response.json()["stream_key"])).ok


async def test_revoke_leaves_the_channel_without_a_key(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "revoked", None)
    response = await admin.post(f"/api/channels/{channel['id']}/key/revoke")
    assert response.json()["revoked_key_ids"] == [channel["key_id"]]
    reveal = await admin.post(f"/api/channels/{channel['id']}/key/reveal")
    assert reveal.status_code == 409
    assert reveal.json()["error"]["code"] == "no_active_key"


async def test_disabling_a_user_ends_their_sessions_and_their_keys(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    streamer = await api.signed_in("dan@example.com")
    channel = await api.channel(admin, "dans", "dan@example.com")
    user_id = (await streamer.get("/api/me")).json()["user"]["id"]
    response = await admin.post(f"/api/users/{user_id}/disable")
    assert response.json()["disabled"] is True
    assert (await streamer.get("/api/me")).status_code == 401
    assert not (await verify(api, channel["stream_key"])).ok
    event = await api.bus.wait_for(KeyRevoked, timeout=2)
    assert event.key_id == channel["key_id"]


async def test_the_last_admin_cannot_be_disabled(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    me = (await admin.get("/api/me")).json()["user"]["id"]
    response = await admin.post(f"/api/users/{me}/disable")
    assert response.status_code == 409


async def test_mapping_a_channel_to_an_ingest_server_changes_its_url(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "mapped", None)
    server = await admin.post(
        "/api/ingest-servers",
        json={"name": "eu-1", "rtmp_url": "rtmp://eu-1.example.com/live", "capacity": 50},
    )
    assert server.status_code == 201
    mapped = await admin.put(
        f"/api/channels/{channel['id']}/ingest-server", json={"server": "eu-1"}
    )
    assert mapped.json()["server_url"] == "rtmp://eu-1.example.com/live"
    assert mapped.json()["ingest_server"] == "eu-1"
    bad = await admin.post("/api/ingest-servers", json={"name": "x", "rtmp_url": "http://nope"})
    assert bad.status_code == 422
    listed = (await admin.get("/api/ingest-servers")).json()
    assert [s["name"] for s in listed] == ["eu-1"]


async def test_the_rtmps_url_is_given_when_the_server_offers_it(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "plain", None)
    assert channel["secure_server_url"] is None  # RTMPS off: nothing to show
    api.live.rtmps_url = "rtmps://ingest.test:1936/live"
    detail = (await admin.get(f"/api/channels/{channel['id']}")).json()
    assert detail["server_url"] == "rtmp://ingest.test/live"
    assert detail["secure_server_url"] == "rtmps://ingest.test:1936/live"
    for name, url, secure in [
        ("tls-1", "rtmps://tls-1.example.com/live", "rtmps://tls-1.example.com/live"),
        ("plain-1", "rtmp://plain-1.example.com/live", None),
    ]:
        await admin.post("/api/ingest-servers", json={"name": name, "rtmp_url": url})
        mapped = await admin.put(
            f"/api/channels/{channel['id']}/ingest-server", json={"server": name}
        )
        assert (mapped.json()["server_url"], mapped.json()["secure_server_url"]) == (url, secure)


async def test_no_plain_key_or_password_is_stored(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "secretive", None)
    rotated = await admin.post(f"/api/channels/{channel['id']}/key/rotate")
    keys = [channel["stream_key"], rotated.json()["stream_key"]]
    async with api.context.sessions() as session:
        dump = []
        for table in ("users", "channels", "stream_keys", "audit_log", "auth_sessions"):
            rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()
            dump.extend(repr(row) for row in rows)
    everything = "\n".join(dump)
    for key in keys:
        assert key not in everything
        assert key[-43:] not in everything
    assert "correct horse battery staple" not in everything


async def test_live_status_comes_from_the_ingest_node(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "on-air", None)
    async with api.context.sessions() as session:
        channel_id = (await credentials.find_channel(session, channel["id"])).id
    started, _, _ = await lifecycle.publish_started(
        api.context.sessions,
        event=PublishStarted(channel_id, channel["key_id"], "c1", None, "node-1"),
        remote_address="192.0.2.9",
        fencing_token=1,
        test=False,
        default_grace=30,
        now=time.time(),
    )
    assert (await admin.get(f"/api/channels/{channel['id']}")).json()["status"] == "offline"
    await lifecycle.media_flowing(
        api.context.sessions, channel_id=channel_id, now=time.time(), node="node-1"
    )
    api.live.streams[channel_id] = LiveStream(
        channel_id, channel["key_id"], "c1", "127.0.0.1:1", 12.5, {"video": "avc1"},
        {"video_frames": 375}, 10, {"fps": 30.0}, {"overall": "good", "issues": []}, time.time(),
    )  # fmt: skip
    detail = (await admin.get(f"/api/channels/{channel['id']}")).json()
    assert detail["status"] == "live"
    assert detail["session_id"] == started.session_id
    assert detail["stats"]["counters"]["video_frames"] == 375
    assert detail["stats"]["health"]["overall"] == "good"
    assert detail["stats"]["last_update"] > 0
    streams = (await admin.get("/api/streams")).json()
    assert [s["channel_id"] for s in streams] == [channel_id]
    assert timedelta(seconds=detail["stats"]["uptime"]) == timedelta(seconds=12.5)

    await lifecycle.media_stalled(
        api.context.sessions, channel_id=channel_id, now=time.time(), grace=20, node="node-1"
    )
    waiting = (await admin.get(f"/api/channels/{channel['id']}")).json()
    assert waiting["status"] == "reconnecting"
    assert 0 < waiting["grace_left"] <= 20
    metrics = (await admin.get("/metrics")).text
    assert (
        f'stream_sync_channel_status{{channel="{channel["id"]}",status="reconnecting"}} 1.0'
        in metrics
    )
    assert f'stream_sync_channel_fps{{channel="{channel["id"]}"}} 30.0' in metrics
    assert channel["stream_key"] not in metrics


async def test_channel_settings_grace_and_test_mode(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "tunable", None)
    changed = await admin.patch(
        f"/api/channels/{channel['id']}", json={"grace_seconds": 5, "test_mode": True}
    )
    assert changed.status_code == 200
    assert (changed.json()["grace_seconds"], changed.json()["test_mode"]) == (5, True)
    refused = await admin.patch(f"/api/channels/{channel['id']}", json={"grace_seconds": -1})
    assert refused.status_code == 422
    audit = (await admin.get(f"/api/channels/{channel['id']}/audit")).json()
    changes = [row for row in audit if row["action"] == "channel.settings_changed"]
    assert [row["details"] for row in changes] == [{"grace_seconds": 5, "test_mode": True}]
