"""The sender: due deliveries out over HTTP, each on its own, results into the log.

Every delivery is an independent POST: a failing one never holds back the next
(receivers order a channel's events by ``seq``). Each endpoint has a few slots
(``per_endpoint``) and all of them share ``total``, so a slow or dead endpoint
uses its own slots only, and waits for them, never the others'. A claimed attempt
runs at most ``timeout`` seconds; redirects are not followed (a 3xx is a failure,
as a moved receiver should be re-registered, not followed blindly). The response
body is never read beyond its status line.

Runs in the monitor role, so one process sends. Nothing here logs a URL (it may
hold a token) or a secret: endpoints are named by id and host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync import __version__
from stream_sync.credentials.server_secrets import ServerSecrets
from stream_sync.db.engine import OutageLog, unreachable
from stream_sync.db.models import WebhookEndpoint

from . import deliveries, signing
from .deliveries import Claimed, DeliveryStatus
from .endpoints import decrypt_secret, host_of
from .errors import SecretUnreadable
from .policy import RetryPolicy, SenderLimits

__all__ = ["EVENT_ID_HEADER", "EVENT_TYPE_HEADER", "WebhookSender"]


log = logging.getLogger("stream_sync.webhooks")
_FAILURES = OutageLog(log, "webhook sender")
EVENT_ID_HEADER = "Stream-Sync-Event-Id"
EVENT_TYPE_HEADER = "Stream-Sync-Event-Type"
_LEASE_MARGIN = 30.0  # seconds a claim outlives the attempt's timeout


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    host: str
    secret: str | None  # None: it does not decrypt


class WebhookSender:
    """Sends due deliveries; `send_due` starts what fits, `run` keeps doing it."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        secrets: ServerSecrets,
        *,
        policy: RetryPolicy,
        limits: SenderLimits,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._sessions = sessions
        self._secrets = secrets
        self._policy = policy
        self._limits = limits
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(limits.timeout),
            limits=httpx.Limits(
                max_connections=limits.total, max_keepalive_connections=limits.total
            ),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would see every event
            transport=transport,
            headers={"User-Agent": f"stream-sync-webhooks/{__version__}"},
        )
        self._targets: dict[int, _Target] = {}
        self._busy: dict[int, set[int]] = {}  # endpoint id -> delivery ids in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._failing: set[int] = set()  # endpoints whose last attempt failed (logged once)

    def wake(self) -> None:
        """Look for due deliveries now (new ones were created, or a slot freed)."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return sum(len(ids) for ids in self._busy.values())

    async def run(self, interval: float = 1.0, active: Callable[[], bool] = lambda: True) -> None:
        """Send until cancelled; looks again every ``interval`` seconds or when woken.

        While ``active()`` is false (no endpoint is enabled) and nothing is in flight,
        it does not look: an idle server would ask the database every second for nothing.
        """
        try:
            while True:
                self._wake.clear()
                try:
                    if active() or self._tasks:
                        await self.send_due()
                except Exception as exc:
                    _FAILURES.failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
        finally:
            await self.close()

    async def send_due(self) -> int:
        """Claim what is due and fits the free slots, and start sending it; returns how many."""
        started = 0
        now = self._now()
        lease = timedelta(seconds=self._limits.timeout + _LEASE_MARGIN)
        async with self._sessions() as session:
            full = {e for e, ids in self._busy.items() if len(ids) >= self._limits.per_endpoint}
            for endpoint_id in await deliveries.due_endpoints(session, now=now, exclude=full):
                free = min(
                    self._limits.per_endpoint - len(self._busy.get(endpoint_id, ())),
                    self._limits.total - self.in_flight,
                )
                if free <= 0:
                    break
                busy = self._busy.setdefault(endpoint_id, set())
                claimed = await deliveries.claim(
                    session, endpoint_id=endpoint_id, now=now, lease=lease, limit=free, exclude=busy
                )
                if not claimed:
                    continue
                target = await self._target(session, endpoint_id)
                for delivery in claimed:
                    busy.add(delivery.id)
                    task = asyncio.get_running_loop().create_task(self._attempt(delivery, target))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    started += 1
        return started

    async def wait_in_flight(self, count: int) -> None:
        """Wait until at most ``count`` attempts are in flight (recorded, slots freed)."""
        while self.in_flight > count:
            await asyncio.wait(list(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    async def idle(self) -> None:
        """Wait until every attempt started so far has been recorded (for tests and stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()  # its claim runs out and a later run tries again
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._client.aclose()

    def forget(self, endpoint_id: int) -> None:
        """An endpoint changed or went: read it again before its next attempt."""
        self._targets.pop(endpoint_id, None)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _target(self, session: AsyncSession, endpoint_id: int) -> _Target:
        target = self._targets.get(endpoint_id)
        if target is None:
            async with session.begin():
                row = (
                    await session.execute(
                        select(WebhookEndpoint.url, WebhookEndpoint.secret_ciphertext).where(
                            WebhookEndpoint.id == endpoint_id
                        )
                    )
                ).one()
            try:
                secret: str | None = decrypt_secret(self._secrets, endpoint_id, row[1])
            except SecretUnreadable:
                secret = None
            target = _Target(row[0], host_of(row[0]), secret)
            self._targets[endpoint_id] = target
        return target

    async def _attempt(self, delivery: Claimed, target: _Target) -> None:
        try:
            status, error = await self._post(delivery, target)
            async with self._sessions() as session:
                if error is None and status is not None:
                    await deliveries.record_success(
                        session, delivery_id=delivery.id, now=self._now(), status=status
                    )
                    self._recovered(delivery.endpoint_id, target)
                else:
                    outcome = await deliveries.record_failure(
                        session,
                        claimed=delivery,
                        now=self._now(),
                        policy=self._policy,
                        error=error or "failed",
                        status=status,
                    )
                    self._failed(delivery, target, error or "failed", outcome)
        except Exception as exc:  # the claim runs out and the attempt is made again
            if unreachable(exc):
                log.warning(
                    "webhooks: could not record delivery %d: database unreachable", delivery.id
                )
            else:
                log.exception("webhooks: could not record delivery %d", delivery.id)
        finally:
            busy = self._busy.get(delivery.endpoint_id)
            if busy is not None:
                busy.discard(delivery.id)
            self._wake.set()  # a slot is free

    async def _post(self, delivery: Claimed, target: _Target) -> tuple[int | None, str | None]:
        """(HTTP status, None) on a 2xx answer, else (status or None, what went wrong)."""
        if target.secret is None:
            return None, "the signing secret cannot be decrypted; register the endpoint again"
        content = delivery.body.encode()
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            signing.HEADER: signing.sign(target.secret, content, timestamp),
            EVENT_ID_HEADER: delivery.event_id,
            EVENT_TYPE_HEADER: delivery.type,
        }
        try:
            async with asyncio.timeout(self._limits.timeout):
                request = self._client.build_request(
                    "POST", target.url, content=content, headers=headers
                )
                response = await self._client.send(request, stream=True)
                await response.aclose()  # the status is the answer; the body is not read
        except Exception as exc:  # whatever the network or the receiver did: a failed attempt
            return None, _describe(exc, target)
        status = response.status_code
        if 200 <= status < 300:
            return status, None
        return status, f"HTTP {status}"

    def _failed(
        self, delivery: Claimed, target: _Target, error: str, outcome: DeliveryStatus
    ) -> None:
        endpoint = delivery.endpoint_id
        if outcome is DeliveryStatus.FAILED:
            log.warning(
                "webhook endpoint %d (%s): gave up on delivery %d (%s) after %d attempts: %s",
                endpoint,
                target.host,
                delivery.id,
                delivery.type,
                delivery.attempts,
                error,
            )
        elif endpoint not in self._failing:
            log.warning(
                "webhook endpoint %d (%s) failing: %s; retrying with backoff",
                endpoint,
                target.host,
                error,
            )
        self._failing.add(endpoint)

    def _recovered(self, endpoint: int, target: _Target) -> None:
        if endpoint in self._failing:
            self._failing.discard(endpoint)
            log.info("webhook endpoint %d (%s) delivers again", endpoint, target.host)


def _describe(exc: BaseException, target: _Target) -> str:
    """One line for the log and the delivery record, without the URL (it may hold a token)."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timed out"
    text = str(exc).replace(target.url, target.host)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
