"""The HTTP API over real databases (SQLite and PostgreSQL), driven in process with httpx."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync.accounts.throttle import LoginThrottle
from stream_sync.api.app import create_app
from stream_sync.api.context import ApiContext, LiveStream
from stream_sync.api.watch import ChannelWatchers
from stream_sync.audit import Actor
from stream_sync.credentials.server_secrets import ServerSecrets
from stream_sync.db import session_factory
from stream_sync.db.models import Role
from stream_sync.operations import ControlPlane
from stream_sync.settings import Settings
from stream_sync.state.inprocess import InProcessBus
from tests.support import BusRecorder

PASSWORD = "correct horse battery staple"
CLIENT_ADDRESS = "203.0.113.7"


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class StaticLiveView:
    """What the ingest node reports as live; the API tests set it directly."""

    streams: dict[int, LiveStream] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    watchers: ChannelWatchers = field(default_factory=ChannelWatchers)
    rtmps_url: str | None = None  # RTMPS off unless a test turns it on
    thumbnails_seen: list[int] = field(default_factory=list)

    def live_streams(self) -> dict[int, LiveStream]:
        return self.streams

    def default_rtmp_url(self) -> str:
        return "rtmp://ingest.test/live"

    def default_rtmps_url(self) -> str | None:
        return self.rtmps_url

    def thumbnail_seen(self, channel_id: int) -> None:
        self.thumbnails_seen.append(channel_id)


@dataclass
class Api:
    context: ApiContext
    app: Any
    bus: BusRecorder
    live: StaticLiveView
    clock: FakeClock
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, address: str = CLIENT_ADDRESS) -> httpx.AsyncClient:
        """A browser of its own (its own cookie jar)."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        self.clients.append(client)
        return client

    async def user(self, email: str, role: Role = Role.STREAMER) -> int:
        created = await self.context.control.create_user(
            email=email, password=PASSWORD, role=role, actor=Actor.cli()
        )
        return created.id

    async def signed_in(self, email: str, role: Role = Role.STREAMER) -> httpx.AsyncClient:
        """A client signed in as a new user, sending its CSRF token on every request."""
        await self.user(email, role)
        client = self.client()
        response = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
        return client

    async def channel(
        self, admin: httpx.AsyncClient, name: str, owner: str | None
    ) -> dict[str, Any]:
        response = await admin.post("/api/channels", json={"name": name, "owner_email": owner})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def api(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        data_dir=tmp_path, max_request_size=16 * 1024, trusted_proxies=["10.0.0.0/8"]
    )
    sessions = session_factory(engine)
    secrets = ServerSecrets(hmac_key=os.urandom(32), encryption_key=os.urandom(32))
    bus = InProcessBus()
    recorder = BusRecorder(bus)
    clock = FakeClock()
    live = StaticLiveView()
    context = ApiContext(
        settings=settings,
        sessions=sessions,
        secrets=secrets,
        control=ControlPlane(sessions=sessions, secrets=secrets, bus=bus),
        live=live,
        throttle=LoginThrottle(now=clock),
    )
    harness = Api(context, create_app(context), recorder, live, clock)
    try:
        yield harness
    finally:
        for client in harness.clients:
            await client.aclose()
        await recorder.close()
