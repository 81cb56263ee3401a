"""Who may connect and publish: the application's answer to the core's questions.

The protocol core only asks; this module decides, from the stream key (checked
through the key cache), the node's room, the channel's mapping, and the lock that
keeps one publisher per channel across all nodes. Refusals carry a machine-readable
reason for logs and metrics and a description that the encoder shows its user
(FFmpeg prints it as "Server error: ..."); a redirect carries another node's URL,
sent as an Enhanced RTMP ReconnectRequest to clients that announced support for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ..credentials.keys import parse_key_id, redact
from ..rtmp.events import ConnectRequested
from ..rtmp.messages import StatusCode
from ..state.errors import StateUnavailable
from ..state.interfaces import FencingTokens, Lease, PublishLocks
from .keycheck import DatabaseUnavailable, KeyChecker

log = logging.getLogger("stream_sync.ingest")
MAX_NAME_LENGTH = 256


class TakeoverPolicy(StrEnum):
    TAKEOVER_IF_STALE = "takeover-if-stale"  # a silent holder (dead OBS) yields to its owner
    REJECT = "reject"
    TAKEOVER = "takeover"


@dataclass(frozen=True, slots=True)
class PublishGrant:
    channel_id: int
    channel_name: str
    key_id: str
    lease: Lease
    took_over: Lease | None = None  # the previous holder this publish displaced


@dataclass(frozen=True, slots=True)
class PublishRefusal:
    reason: str  # malformed_key, unknown_key, revoked_key, expired_key, channel_live, ...
    description: str  # shown by the encoder; never contains the key
    key_id: str | None = None
    channel_id: int | None = None
    code: str = StatusCode.PUBLISH_BAD_NAME
    redirect: str | None = None  # another node's tcUrl, for clients that can reconnect


class NodeView(Protocol):
    """What admission needs to know about the node it runs on and its peers."""

    @property
    def name(self) -> str: ...

    def has_room(self) -> bool: ...

    async def elsewhere(self, channel_id: int | None) -> str | None:
        """The tcUrl of another node with room (the channel's mapped one first), if any."""

    async def mapped_url(self, channel_id: int) -> str | None:
        """The URL of the channel's mapped ingest server when that is not this node."""


class Admission(Protocol):
    def check_connect(self, request: ConnectRequested) -> str | None:
        """A refusal description, or None to accept the connection."""

    async def admit_publish(self, name: str, *, owner: str) -> PublishGrant | PublishRefusal: ...

    async def release(self, grant: PublishGrant) -> None: ...


def stream_key_of(name: str) -> str:
    """The key inside a publish name: encoders may append a query string or stray spaces."""
    return name.split("?", 1)[0].strip()


def app_name_of(app: str) -> str:
    return app.split("?", 1)[0].strip().strip("/")


def _seen(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()


class KeyAdmission:
    def __init__(
        self,
        *,
        checker: KeyChecker,
        locks: PublishLocks,
        fencing: FencingTokens,
        node: NodeView,
        app: str,
        policy: TakeoverPolicy = TakeoverPolicy.TAKEOVER_IF_STALE,
        stale_after: float = 3.0,
        enforce_mapping: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._checker = checker
        self._locks = locks
        self._fencing = fencing
        self._node = node
        self._app = app
        self._policy = policy
        self._stale_after = stale_after
        self._enforce_mapping = enforce_mapping
        self._clock = clock

    def check_connect(self, request: ConnectRequested) -> str | None:
        app = app_name_of(request.app)
        if app != self._app:
            # Redacted before it is cut: a key pasted into the server URL, cut short,
            # would no longer look like a key to the log's redaction.
            shown = redact(app)[:64] if app.isprintable() else "?"
            return f"Unknown application '{shown}'; use the server URL rtmp://<host>/{self._app}"
        return None

    async def admit_publish(self, name: str, *, owner: str) -> PublishGrant | PublishRefusal:
        key = stream_key_of(name[: MAX_NAME_LENGTH + 1])
        token = self._token_meanwhile(key)
        try:
            try:
                verdict = await self._checker.check(key)
            except DatabaseUnavailable:
                return PublishRefusal("unavailable", "Server busy; try again shortly.")
            channel_id, key_id = verdict.channel_id, verdict.key_id
            if not verdict.ok or channel_id is None or key_id is None:
                return PublishRefusal(
                    f"{verdict.reason}_key", "Invalid stream key.", key_id, channel_id
                )
            return await self._admit(channel_id, key_id, verdict.channel_name, token, owner)
        finally:
            token.cancel()  # done by now, unless refused early

    def _token_meanwhile(self, key: str) -> asyncio.Future[int]:
        """The fencing token, asked for while the key is checked: a storm's cold admission
        waits for one database round trip less. A token only has to be larger than the
        channel's lease before it, and it is still taken before the lock, as it was when
        asked for after the check; one wasted on a refusal is a gap, which is harmless.
        A key that is not even well-formed costs none.
        """
        if parse_key_id(key) is None:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            future.cancel()
            return future
        token = asyncio.ensure_future(self._fencing.next_token())
        token.add_done_callback(_seen)  # a refusal never reads it: nor its failure
        return token

    async def _admit(
        self,
        channel_id: int,
        key_id: str,
        channel_name: str | None,
        token_future: asyncio.Future[int],
        owner: str,
    ) -> PublishGrant | PublishRefusal:
        if self._enforce_mapping and (mapped := await self._node.mapped_url(channel_id)):
            return PublishRefusal(
                "wrong_server",
                f"This channel streams to {mapped}.",
                key_id,
                channel_id,
                redirect=mapped,
            )
        if not self._node.has_room():
            other = await self._node.elsewhere(channel_id)
            where = f"; use {other}" if other else "; try again later"
            return PublishRefusal(
                "node_full",
                f"This ingest server is full{where}.",
                key_id,
                channel_id,
                redirect=other,
            )
        token = await token_future
        node = self._node.name
        try:
            lease = await self._locks.acquire(channel_id, owner, node, token)
        except StateUnavailable:  # locks moving between engines (state/failover.py)
            return PublishRefusal(
                "unavailable", "Server busy; try again shortly.", key_id, channel_id
            )
        displaced = None
        if lease is None:
            holder = await self._locks.holder(channel_id)
            if holder is not None and self._may_take_over(holder):
                lease = await self._locks.take_over(holder, owner, node, token)
                displaced = holder
            elif holder is None:  # released between the two calls
                lease = await self._locks.acquire(channel_id, owner, node, token)
        if lease is None:
            return PublishRefusal(
                "channel_live",
                "This channel is already live from another encoder (no backup ingest).",
                key_id,
                channel_id,
            )
        if displaced is not None:
            log.info(
                "channel=%s taken over from %s (silent for %.1fs) by %s",
                channel_name,
                displaced.owner,
                self._clock() - displaced.renewed_at,
                owner,
            )
        return PublishGrant(channel_id, channel_name or "?", key_id, lease, displaced)

    def _may_take_over(self, holder: Lease) -> bool:
        if self._policy is TakeoverPolicy.TAKEOVER:
            return True
        if self._policy is TakeoverPolicy.REJECT:
            return False
        return self._clock() - holder.renewed_at >= self._stale_after

    async def release(self, grant: PublishGrant) -> None:
        await self._locks.release(grant.lease)
