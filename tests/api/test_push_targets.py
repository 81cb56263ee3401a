"""A channel's push targets over HTTP: owner and admins only, the key write-only and
masked, every change audited and announced to the node holding the stream."""

from __future__ import annotations

from sqlalchemy import select

from stream_sync.db.models import AuditEntry, Role
from stream_sync.db.models import PushTarget as PushTargetRow
from stream_sync.outputs.plan import load_outputs
from stream_sync.state.interfaces import OutputsChanged

from .conftest import Api

YOUTUBE = "rtmp://a.rtmp.youtube.com/live2"
KEY = "abcd-efgh-ijkl-mnop-qrst"


async def test_owner_adds_lists_changes_and_removes_a_target(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    owner = await api.signed_in("sam@example.com")
    channel = await api.channel(admin, "sams-show", "sam@example.com")
    base = f"/api/channels/{channel['id']}/push-targets"

    created = await owner.post(base, json={"name": "YouTube", "url": YOUTUBE + "/", "key": KEY})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["url"] == YOUTUBE  # normalised: no trailing slash
    assert body["key_masked"] == "••••qrst"
    assert KEY not in created.text
    assert (await api.bus.wait_for(OutputsChanged, timeout=2)).channel_id > 0

    listed = await owner.get(base)
    assert [t["name"] for t in listed.json()] == ["YouTube"]
    assert KEY not in listed.text

    async with api.context.sessions() as session:
        row = await session.scalar(select(PushTargetRow))
        assert row is not None
        assert KEY.encode() not in row.key_ciphertext
    async with api.context.sessions() as session:
        [outputs] = await load_outputs(session, api.context.secrets, [row.channel_id])
    [target] = outputs.targets
    assert (target.host, target.port, target.app, target.stream) == (
        "a.rtmp.youtube.com",
        1935,
        "live2",
        KEY,
    )

    new_key = "zzzz-yyyy-xxxx-wwww-9876"
    changed = await owner.patch(f"{base}/{body['id']}", json={"key": new_key, "enabled": False})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["key_masked"], changed.json()["enabled"]) == ("••••9876", False)
    async with api.context.sessions() as session:
        [outputs] = await load_outputs(session, api.context.secrets, [row.channel_id])
    assert outputs.targets == ()  # disabled: not pushed

    assert (await owner.delete(f"{base}/{body['id']}")).status_code == 204
    assert (await owner.get(base)).json() == []
    async with api.context.sessions() as session:
        audit = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    actions = [entry.action for entry in audit if entry.action.startswith("push_target")]
    assert actions == ["push_target.added", "push_target.updated", "push_target.deleted"]
    updated = next(e for e in audit if e.action == "push_target.updated")
    assert updated.details == {
        "target_id": body["id"],
        "changed": ["enabled", "key"],
        "enabled": False,
    }
    assert all(KEY not in str(e.details) and new_key not in str(e.details) for e in audit)


async def test_another_streamer_sees_no_targets_and_cannot_add_one(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    await api.signed_in("sam@example.com")
    other = await api.signed_in("eve@example.com")
    channel = await api.channel(admin, "sams-show", "sam@example.com")
    base = f"/api/channels/{channel['id']}/push-targets"
    created = await admin.post(
        base, json={"name": "Origin", "url": "rtmps://o.example/in", "key": KEY}
    )
    assert created.status_code == 201  # admins manage any channel's targets
    assert (await other.get(base)).status_code == 404
    response = await other.post(base, json={"name": "x", "url": YOUTUBE, "key": KEY})
    assert response.status_code == 404
    response = await other.delete(f"{base}/{created.json()['id']}")
    assert response.status_code == 404


async def test_bad_targets_are_one_clear_error_without_the_key(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "show", None)
    base = f"/api/channels/{channel['id']}/push-targets"
    for url, message in [
        ("https://a.example/live", "rtmp://host[:port]/app or rtmps://"),
        ("rtmp://a.example", "needs an app"),
        ("rtmp://a.example:0/live", "port is not 0"),
        ("rtmp://user:pw@a.example/live", "no user name or password"),
        ("rtmp://a.example/live?x=1", "no '?' or '#'"),
    ]:
        response = await admin.post(base, json={"name": "x", "url": url, "key": KEY})
        assert response.status_code == 422, url
        assert response.json()["error"]["code"] == "invalid_push_target"
        assert message in response.json()["error"]["message"], response.text
        assert KEY not in response.text
    spaced = await admin.post(base, json={"name": "x", "url": YOUTUBE, "key": "has space " + KEY})
    assert spaced.status_code == 422
    assert KEY not in spaced.text
    too_long = await admin.post(base, json={"name": "x", "url": YOUTUBE, "key": "k" * 600})
    assert too_long.status_code == 422
    assert "k" * 600 not in too_long.text
    missing = await admin.patch(f"{base}/999", json={"enabled": False})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "push_target_not_found"


async def test_a_channel_has_at_most_eight_targets(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "show", None)
    base = f"/api/channels/{channel['id']}/push-targets"
    for n in range(8):
        response = await admin.post(base, json={"name": f"t{n}", "url": YOUTUBE, "key": KEY})
        assert response.status_code == 201
    ninth = await admin.post(base, json={"name": "t8", "url": YOUTUBE, "key": KEY})
    assert ninth.status_code == 409
    assert ninth.json()["error"]["code"] == "too_many_push_targets"
