"""Sign-in, cookies, CSRF, API tokens, throttling and password flows over HTTP."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from stream_sync.db.models import Role

from .conftest import PASSWORD, Api


async def test_anonymous_requests_get_a_json_401(api: Api) -> None:
    client = api.client()
    for path in ("/api/me", "/api/channels", "/api/users", "/api/streams"):
        response = await client.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthenticated"


async def test_login_sets_an_httponly_samesite_cookie_and_returns_a_csrf_token(api: Api) -> None:
    await api.user("ana@example.com")
    client = api.client()
    response = await client.post(
        "/api/auth/login", json={"email": " Ana@Example.com ", "password": PASSWORD}
    )
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/" in cookie
    assert response.json()["user"]["email"] == "ana@example.com"
    me = await client.get("/api/me")
    assert me.json()["csrf_token"] == response.json()["csrf_token"]


async def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    await api.user("bo@example.com")
    client = api.client()
    wrong = await client.post(
        "/api/auth/login", json={"email": "bo@example.com", "password": "nope"}
    )
    unknown = await client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


async def test_failed_logins_are_throttled_per_account(api: Api) -> None:
    await api.user("cy@example.com")
    client = api.client()
    codes = []
    for _ in range(6):
        response = await client.post(
            "/api/auth/login", json={"email": "cy@example.com", "password": "wrong password"}
        )
        codes.append(response.status_code)
    assert codes[:5] == [401] * 5
    assert codes[5] == 429
    assert int(response.headers["retry-after"]) >= 1
    # Even the right password waits until the lockout ends (the clock is the test's).
    blocked = await client.post(
        "/api/auth/login", json={"email": "cy@example.com", "password": PASSWORD}
    )
    assert blocked.status_code == 429
    assert api.context.requests.refused == {"login_throttled": 2}
    api.clock.now += 3600
    allowed = await client.post(
        "/api/auth/login", json={"email": "cy@example.com", "password": PASSWORD}
    )
    assert allowed.status_code == 200


async def test_state_changing_requests_need_the_csrf_header(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "csrf-test", None)
    token = admin.headers.pop("X-CSRF-Token")
    refused = await admin.post(f"/api/channels/{channel['id']}/key/reveal")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    admin.headers["X-CSRF-Token"] = ("y" if token[0] == "x" else "x") + token[1:]  # one char off
    assert (await admin.post(f"/api/channels/{channel['id']}/key/reveal")).status_code == 403
    admin.headers["X-CSRF-Token"] = token
    assert (await admin.post(f"/api/channels/{channel['id']}/key/reveal")).status_code == 200


async def test_api_tokens_work_without_cookies_and_stop_when_revoked(api: Api) -> None:
    user = await api.signed_in("dee@example.com")
    created = await user.post("/api/me/tokens", json={"name": "obs-script"})
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("sst_")
    listed = (await user.get("/api/me/tokens")).json()
    assert [t["name"] for t in listed] == ["obs-script"]
    assert "token" not in listed[0]

    script = api.client()
    script.headers["Authorization"] = f"Bearer {token}"
    assert (await script.get("/api/me")).json()["user"]["email"] == "dee@example.com"
    assert (await script.post("/api/me/tokens", json={"name": "second"})).status_code == 201

    token_id = created.json()["token_id"]
    assert (await user.delete(f"/api/me/tokens/{token_id}")).status_code == 204
    assert (await script.get("/api/me")).status_code == 401


async def test_logout_ends_the_session(api: Api) -> None:
    client = await api.signed_in("eve@example.com")
    assert (await client.post("/api/auth/logout")).status_code == 204
    assert (await client.get("/api/me")).status_code == 401


async def test_password_change_keeps_this_session_and_ends_the_others(api: Api) -> None:
    first = await api.signed_in("fay@example.com")
    second = api.client()
    login = await second.post(
        "/api/auth/login", json={"email": "fay@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200
    new_password = "a much better passphrase"
    changed = await first.post(
        "/api/me/password", json={"current_password": PASSWORD, "new_password": new_password}
    )
    assert changed.status_code == 204
    assert (await first.get("/api/me")).status_code == 200
    assert (await second.get("/api/me")).status_code == 401
    again = await api.client().post(
        "/api/auth/login", json={"email": "fay@example.com", "password": new_password}
    )
    assert again.status_code == 200


async def test_weak_password_is_a_422_with_the_reason(api: Api) -> None:
    client = await api.signed_in("gus@example.com")
    response = await client.post(
        "/api/me/password", json={"current_password": PASSWORD, "new_password": "short"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "weak_password"


async def test_admin_started_password_reset(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    user_id = await api.user("hal@example.com")
    started = await admin.post(f"/api/users/{user_id}/password-reset")
    assert started.status_code == 200
    token = started.json()["token"]
    anonymous = api.client()
    new_password = "reset by the admin, chosen by hal"
    done = await anonymous.post(
        "/api/auth/password-reset", json={"token": token, "new_password": new_password}
    )
    assert done.status_code == 204
    reused = await anonymous.post(
        "/api/auth/password-reset", json={"token": token, "new_password": "another passphrase!"}
    )
    assert reused.status_code == 400
    login = await anonymous.post(
        "/api/auth/login", json={"email": "hal@example.com", "password": new_password}
    )
    assert login.status_code == 200


async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(api: Api) -> None:
    await api.user("ivy@example.com")
    direct = api.client("198.51.100.9")
    direct.headers["X-Forwarded-For"] = "192.0.2.55"
    await direct.post("/api/auth/login", json={"email": "ivy@example.com", "password": PASSWORD})
    proxied = api.client("10.1.2.3")
    proxied.headers["X-Forwarded-For"] = "192.0.2.66, 10.9.9.9"
    await proxied.post("/api/auth/login", json={"email": "ivy@example.com", "password": PASSWORD})
    async with api.context.sessions() as session:
        rows = (
            (
                await session.execute(
                    text(
                        "SELECT source_address FROM audit_log"
                        " WHERE action = 'login.succeeded' ORDER BY id"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert rows == ["198.51.100.9", "192.0.2.66"]


async def test_validation_errors_name_the_field(api: Api) -> None:
    response = await api.client().post("/api/auth/login", json={"email": "", "password": 5})
    assert response.status_code == 422
    fields = {item["field"] for item in response.json()["error"]["fields"]}
    assert {"email", "password"} <= fields


async def test_oversized_bodies_are_refused_with_413(api: Api) -> None:
    response = await api.client().post(
        "/api/auth/login",
        content=b'{"email": "' + b"a" * 20000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert api.context.requests.refused == {"too_large": 1}  # counted for the metrics


@pytest.mark.parametrize(
    ("base", "address", "headers", "secure"),
    [
        ("http://testserver", "203.0.113.7", {}, False),
        ("https://testserver", "203.0.113.7", {}, True),  # HTTPS served here (--tls-cert)
        # A proxy we trust ended TLS: its own hop, the last one, says so.
        ("http://testserver", "10.1.2.3", {"X-Forwarded-Proto": "http, https"}, True),
        ("http://testserver", "10.1.2.3", {"X-Forwarded-Proto": "https, http"}, False),
        # Anyone else saying so is not believed.
        ("http://testserver", "203.0.113.7", {"X-Forwarded-Proto": "https"}, False),
    ],
    ids=["http", "https", "trusted-proxy", "proxy-spoken-to-in-clear", "untrusted-claim"],
)
async def test_the_session_cookie_is_secure_wherever_the_browser_spoke_https(
    api: Api, base: str, address: str, headers: dict[str, str], secure: bool
) -> None:
    await api.user("sam@example.com")
    transport = httpx.ASGITransport(app=api.app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        response = await client.post(
            "/api/auth/login",
            json={"email": "sam@example.com", "password": PASSWORD},
            headers=headers,
        )
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert ("; secure" in cookie.lower()) is secure, cookie
    assert "httponly" in cookie.lower()
