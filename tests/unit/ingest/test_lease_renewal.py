"""Lease renewal racing the end of its publish: the ended publish never takes its lock back."""

from __future__ import annotations

from typing import Any

from stream_sync.ingest.admission import PublishGrant
from stream_sync.ingest.server import IngestServer
from stream_sync.rtmp.config import RtmpConfig
from stream_sync.state.inprocess import InProcessBus, InProcessLocks
from stream_sync.state.interfaces import Lease

CHANNEL = 7


class Publisher:
    """What `_renew` sees of a connection: its grant, its id, and a way to stop it."""

    def __init__(self, grant: PublishGrant) -> None:
        self.grant: PublishGrant | None = grant
        self.id = "c1"
        self.stopped: list[str] = []

    def stop_publish(self, description: str, reason: str) -> None:
        self.stopped.append(reason)


class Racing(InProcessLocks):
    """Locks whose `renew` or `acquire` lets the publish end while it is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.during = ""  # set once the publish is set up
        self.publisher: Publisher | None = None

    def _end(self, lease: Lease) -> Any:
        assert self.publisher is not None
        self.publisher.grant = None  # the encoder left: _end_publish ran...
        return super().release(lease)  # ...and so did its release

    async def renew(self, lease: Lease) -> Lease | None:
        if self.during == "renew":
            await self._end(lease)
        return await super().renew(lease)

    async def acquire(self, channel_id: int, owner: str, node: str, token: int) -> Lease | None:
        taken = await super().acquire(channel_id, owner, node, token)
        if self.during == "acquire" and taken is not None:
            assert self.publisher is not None
            self.publisher.grant = None  # ended while the lock was taken back
        return taken


async def renew_while_ending(during: str) -> tuple[Racing, Publisher]:
    locks = Racing()
    lease = await locks.acquire(CHANNEL, "node/c1", "node", 5)
    assert lease is not None
    if during == "acquire":
        await locks.release(lease)  # expired while silent: renew finds nothing
    publisher = Publisher(PublishGrant(CHANNEL, "demo", "key0000000id", lease))
    locks.publisher, locks.during = publisher, during
    server = IngestServer(config=RtmpConfig(), admission=None, bus=InProcessBus(), locks=locks)  # type: ignore[arg-type]
    await server._renew(publisher)  # type: ignore[arg-type]
    return locks, publisher


async def test_a_publish_that_ended_during_the_renewal_is_not_given_its_lock_back() -> None:
    locks, publisher = await renew_while_ending("renew")
    assert await locks.holder(CHANNEL) is None  # the channel is free for the next encoder
    assert publisher.stopped == []


async def test_a_lock_taken_back_for_a_publish_that_ended_meanwhile_is_released() -> None:
    locks, publisher = await renew_while_ending("acquire")
    assert await locks.holder(CHANNEL) is None
    assert publisher.stopped == []
