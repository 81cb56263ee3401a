"""Admission decisions with the in-process engines: policies, capacity, mapping, keys."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.credentials.server_secrets import ServerSecrets
from stream_sync.db import session_factory
from stream_sync.ingest.admission import KeyAdmission, PublishGrant, PublishRefusal, TakeoverPolicy
from stream_sync.ingest.keycheck import KeyChecker
from stream_sync.rtmp.events import ConnectRequested
from stream_sync.state.database import DatabaseFencing
from stream_sync.state.inprocess import InProcessKeyCache, InProcessLocks


@dataclass
class FakeNode:
    """The node as admission sees it; the tests decide its room and its peers."""

    name: str = "here"
    room: bool = True
    other: str | None = "rtmp://there/live"
    mapped: dict[int, str] = field(default_factory=dict)

    def has_room(self) -> bool:
        return self.room

    async def elsewhere(self, channel_id: int | None) -> str | None:
        return self.other

    async def mapped_url(self, channel_id: int) -> str | None:
        return self.mapped.get(channel_id)


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    admission: KeyAdmission
    locks: InProcessLocks
    node: FakeNode
    clock: Clock
    key: str
    channel_id: int


async def make(
    engine: AsyncEngine, policy: TakeoverPolicy = TakeoverPolicy.TAKEOVER_IF_STALE, **options: bool
) -> Setup:
    sessions = session_factory(engine)
    secrets = ServerSecrets(hmac_key=os.urandom(32), encryption_key=os.urandom(32))
    async with sessions() as session:
        created = await service.create_channel(
            session, secrets=secrets, name="show", actor=Actor.cli()
        )
    clock = Clock()
    locks = InProcessLocks(ttl=10, wall=clock)
    node = FakeNode()
    checker = KeyChecker(sessions=sessions, secrets=secrets, cache=InProcessKeyCache())
    admission = KeyAdmission(
        checker=checker,
        locks=locks,
        fencing=DatabaseFencing(sessions),
        node=node,
        app="live",
        policy=policy,
        stale_after=3.0,
        clock=clock,
        **options,
    )
    return Setup(admission, locks, node, clock, created.key, created.channel_id)


async def test_a_healthy_holder_is_never_displaced_but_a_silent_one_is(engine: AsyncEngine) -> None:
    s = await make(engine)
    first = await s.admission.admit_publish(s.key, owner="here/c1")
    assert isinstance(first, PublishGrant)
    s.clock.now += 2.9  # not yet stale
    second = await s.admission.admit_publish(s.key, owner="here/c2")
    assert isinstance(second, PublishRefusal)
    assert second.reason == "channel_live"
    assert "no backup ingest" in second.description
    s.clock.now += 0.2  # 3.1 s without a renewal: a dead OBS connection
    third = await s.admission.admit_publish(s.key, owner="here/c3")
    assert isinstance(third, PublishGrant)
    assert third.took_over == first.lease
    assert third.lease.token > first.lease.token
    assert await s.locks.renew(first.lease) is None  # the old holder finds out


@pytest.mark.parametrize(
    ("policy", "taken"), [(TakeoverPolicy.REJECT, False), (TakeoverPolicy.TAKEOVER, True)]
)
async def test_the_other_policies(engine: AsyncEngine, policy: TakeoverPolicy, taken: bool) -> None:
    s = await make(engine, policy)
    assert isinstance(await s.admission.admit_publish(s.key, owner="a"), PublishGrant)
    s.clock.now += 60  # stale, but only the policy decides
    second = await s.admission.admit_publish(s.key, owner="b")
    assert isinstance(second, PublishGrant) is taken


async def test_a_full_node_refuses_with_a_redirect(engine: AsyncEngine) -> None:
    s = await make(engine)
    s.node.room = False
    refusal = await s.admission.admit_publish(s.key, owner="a")
    assert isinstance(refusal, PublishRefusal)
    assert refusal.reason == "node_full"
    assert refusal.redirect == "rtmp://there/live"
    assert "use rtmp://there/live" in refusal.description
    s.node.other = None
    alone = await s.admission.admit_publish(s.key, owner="a")
    assert isinstance(alone, PublishRefusal)
    assert alone.redirect is None
    assert "try again later" in alone.description


async def test_the_mapping_is_a_preference_unless_enforced(engine: AsyncEngine) -> None:
    preferred = await make(engine)
    preferred.node.mapped[preferred.channel_id] = "rtmp://eu-1/live"
    assert isinstance(
        await preferred.admission.admit_publish(preferred.key, owner="a"), PublishGrant
    )


async def test_an_enforced_mapping_refuses_with_the_right_server(engine: AsyncEngine) -> None:
    s = await make(engine, enforce_mapping=True)
    s.node.mapped[s.channel_id] = "rtmp://eu-1/live"
    refusal = await s.admission.admit_publish(s.key, owner="a")
    assert isinstance(refusal, PublishRefusal)
    assert refusal.reason == "wrong_server"
    assert refusal.redirect == "rtmp://eu-1/live"


@pytest.mark.parametrize(
    ("presented", "reason"),
    [("garbage", "malformed_key"), ("ssk_AAAAAAAAAAAA_" + "B" * 43, "unknown_key")],
)
async def test_bad_keys(engine: AsyncEngine, presented: str, reason: str) -> None:
    s = await make(engine)
    refusal = await s.admission.admit_publish(presented, owner="a")
    assert isinstance(refusal, PublishRefusal)
    assert refusal.reason == reason
    assert refusal.description == "Invalid stream key."


async def test_a_query_string_after_the_key_is_ignored(engine: AsyncEngine) -> None:
    s = await make(engine)
    grant = await s.admission.admit_publish(f" {s.key}?obs=1 ", owner="a")
    assert isinstance(grant, PublishGrant)
    assert grant.channel_id == s.channel_id


def connect(app: str) -> ConnectRequested:
    return ConnectRequested(1.0, app, f"rtmp://host/{app}", "FMLE/3.0", 0, (), 0, {})


async def test_a_key_pasted_into_the_server_url_is_not_repeated(engine: AsyncEngine) -> None:
    """The refusal (logged, and shown by the encoder) names the app, its key redacted first."""
    s = await make(engine)
    key_id, secret = s.key[4:16], s.key[17:]
    named = s.admission.check_connect(connect(f"live/{s.key}"))
    assert named is not None
    assert f"Unknown application 'live/ssk_{key_id}_***'" in named
    long = s.admission.check_connect(connect(f"{'x' * 50}/{s.key}"))
    assert long is not None
    assert secret[:4] not in long  # cut at 64 characters after redaction
    assert s.admission.check_connect(connect(f"live?key={s.key}")) is None  # a query is ignored
