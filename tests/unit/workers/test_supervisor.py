"""The supervisor with real child processes that speak the real link (fake_worker.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from stream_sync.workers.supervisor import (
    Backoff,
    Supervisor,
    WorkerStartError,
    describe_exit,
)

FAKE = str(Path(__file__).with_name("fake_worker.py"))
FAST = Backoff(first=0.05, factor=2.0, cap=0.2, stable_after=60.0)


class LogLines(logging.Handler):
    """The supervisor's log messages, awaitable (it logs from the test's event loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._changed.set()

    async def wait_for(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        regex = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while True:
                for message in self.messages:
                    if match := regex.search(message):
                        return match
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def logs() -> AsyncIterator[LogLines]:
    handler = LogLines()
    logger = logging.getLogger("stream_sync.workers")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def fake(modes: Callable[[int], str]) -> Callable[[int], list[str]]:
    return lambda index: [sys.executable, FAKE, modes(index)]


def supervisor(modes: Callable[[int], str], count: int = 2, **options: object) -> Supervisor:
    return Supervisor(
        count=count,
        command=fake(modes),
        name=lambda i: f"t-w{i}",
        backoff=FAST,
        **options,  # type: ignore[arg-type]
    )


def exited(pid: int) -> bool:
    """True once pid is gone (the supervisor reaps its children)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_killed_worker_is_logged_and_restarted_and_the_other_keeps_running(
    logs: LogLines,
) -> None:
    workers = supervisor(lambda _: "serve")
    await workers.start()
    try:
        first, second = workers.pids
        os.kill(first, signal.SIGKILL)
        await logs.wait_for(
            rf"ingest worker t-w1 \(pid {first}\) was killed by SIGKILL after .*; restarting in"
        )
        await logs.wait_for(r"ingest worker t-w1 is back")
        await workers.wait_ready()
        assert workers.pids[1] == second  # untouched
        assert workers.pids[0] != first
    finally:
        await workers.stop()
    assert all(exited(pid) for pid in (first, second))


async def test_stop_is_graceful_and_kills_only_those_that_ignore_it(logs: LogLines) -> None:
    workers = supervisor(lambda i: "stubborn" if i == 2 else "serve", stop_timeout=1.0)
    await workers.start()
    pids = workers.pids
    await workers.stop()
    await logs.wait_for(r"ingest worker t-w2 did not stop in time; killing it")
    assert not any("t-w1 did not stop" in m for m in logs.messages)
    assert not any("restarting" in m for m in logs.messages)  # stopping is not crashing
    assert all(exited(pid) for pid in pids)
    assert workers.pids == []


async def test_a_worker_that_cannot_start_fails_the_start_in_one_line() -> None:
    workers = supervisor(lambda i: "fail" if i == 2 else "serve")
    with pytest.raises(WorkerStartError) as failure:
        await workers.start()
    assert re.fullmatch(
        r"ingest worker t-w2 \(pid \d+\) exited with status 3 before it was ready; "
        r"see its log above",
        str(failure.value),
    )
    assert workers.pids == []  # the healthy one was stopped too


async def test_a_worker_that_cannot_even_be_spawned_fails_the_start(tmp_path: Path) -> None:
    workers = Supervisor(count=1, command=lambda _: [str(tmp_path / "missing")], name=str)
    with pytest.raises(WorkerStartError, match=r"^ingest worker 1 could not be started \("):
        await workers.start()


async def test_a_stuck_worker_is_killed_and_replaced(logs: LogLines) -> None:
    starts: list[int] = []

    def modes(index: int) -> str:
        starts.append(index)
        return "stuck" if starts.count(1) == 1 and index == 1 else "serve"

    workers = supervisor(modes, watchdog=3.0)
    await workers.start()
    try:
        await logs.wait_for(r"ingest worker t-w1 \(pid \d+\) gave no sign of life for 3s")
        await logs.wait_for(r"t-w1 .* was killed by SIGKILL")
        await logs.wait_for(r"ingest worker t-w1 is back")
        assert starts.count(1) == 2
        assert starts.count(2) == 1
    finally:
        await workers.stop()


async def test_a_worker_whose_supervisor_vanishes_shuts_down_by_itself() -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        FAKE,
        "serve",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert worker.stdout is not None
    assert worker.stdin is not None
    lines = [await worker.stdout.readline(), await worker.stdout.readline()]
    assert sorted(lines) == [b"alive\n", b"ready\n"]
    worker.stdin.close()  # what the kernel does when the supervisor dies
    _, err = await asyncio.wait_for(worker.communicate(), 10)
    assert worker.returncode == 0
    assert b"the supervisor is gone; shutting down" in err
    assert b"fake worker serve stopping" in err


def test_backoff_grows_to_its_cap() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in (1, 2, 3, 7, 8, 20)] == [0.5, 1.0, 2.0, 30.0, 30.0, 30.0]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "exited with status 0"),
        (3, "exited with status 3"),
        (-9, "was killed by SIGKILL"),
        (-15, "was killed by SIGTERM"),
    ],
)
def test_exits_are_described_for_the_log(code: int, text: str) -> None:
    assert describe_exit(code) == text


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Iterator[None]:
    yield
    assert not [p for p in Path("/proc").glob("[0-9]*") if _is_fake(p)], "a worker outlived it"


def _is_fake(proc: Path) -> bool:
    try:
        cmdline = (proc / "cmdline").read_bytes()
        status = (proc / "status").read_text()
    except OSError:
        return False
    return FAKE.encode() in cmdline and "State:\tZ" not in status
