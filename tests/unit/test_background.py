"""Background: work nobody awaits is kept, its failure logged, and waited for or cancelled."""

from __future__ import annotations

import asyncio
import logging

import pytest

from stream_sync.background import Background

log = logging.getLogger("tests.background")


async def test_a_failure_is_logged_with_what_the_work_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail() -> None:
        raise RuntimeError("disk full")

    background = Background(log)
    task = background.spawn(fail(), "write the row")
    await background.settle()
    assert task.done()
    assert len(background) == 0
    [record] = [r for r in caplog.records if r.name == log.name]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "could not write the row"
    assert record.exc_info is not None
    assert "disk full" in str(record.exc_info[1])


async def test_settle_waits_for_work_started_while_it_waits() -> None:
    background = Background(log)
    done: list[str] = []

    async def second() -> None:
        await asyncio.sleep(0)
        done.append("second")

    async def first() -> None:
        await asyncio.sleep(0)
        background.spawn(second(), "second")
        done.append("first")

    background.spawn(first(), "first")
    assert len(background) == 1
    await background.settle()
    assert done == ["first", "second"]
    assert len(background) == 0


async def test_cancel_ends_work_that_would_never_end_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    background = Background(log)
    forever = asyncio.Event()
    tasks = [background.spawn(forever.wait(), f"wait {i}") for i in range(3)]
    await asyncio.sleep(0)
    await background.cancel()
    assert all(task.cancelled() for task in tasks)
    assert len(background) == 0
    assert not [r for r in caplog.records if r.name == log.name]
