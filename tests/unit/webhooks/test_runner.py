"""The fan-out's pace: at once after a commit when someone listens, a poll a second if not."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync import audit
from stream_sync.credentials import ServerSecrets
from stream_sync.state.inprocess import InProcessBus
from stream_sync.webhooks import endpoints, runner
from stream_sync.webhooks.policy import RetryPolicy, SenderLimits


async def test_commits_wake_the_fan_out_only_while_an_endpoint_listens(
    sessions: async_sessionmaker[AsyncSession],
    server_secrets: ServerSecrets,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "POLL_INTERVAL", 3600.0)  # no poll during the test
    hooks = runner.Webhooks(
        sessions, server_secrets, InProcessBus(), policy=RetryPolicy(), limits=SenderLimits()
    )
    rounds: asyncio.Queue[bool] = asyncio.Queue()
    run_once = hooks.fanout.run_once

    async def counted() -> int:
        created = await run_once()
        rounds.put_nowait(hooks.fanout.listening)
        return created

    monkeypatch.setattr(hooks.fanout, "run_once", counted)
    task = asyncio.create_task(hooks._fan_out())
    try:
        assert await asyncio.wait_for(rounds.get(), 10) is False  # nobody listens
        for _ in range(20):  # a storm of commits
            hooks.committed()
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert rounds.empty()  # ...waits for the next poll

        async with sessions() as session:
            await endpoints.create_endpoint(
                session, secrets=server_secrets, url="https://example.com/h",
                actor=audit.Actor.cli(),
            )  # fmt: skip
        task.cancel()  # the poll would find it an hour from now: start again instead
        with contextlib.suppress(asyncio.CancelledError):
            await task
        task = asyncio.create_task(hooks._fan_out())
        assert await asyncio.wait_for(rounds.get(), 10) is True
        hooks.committed()
        assert await asyncio.wait_for(rounds.get(), 10) is True  # at once, not in an hour
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
