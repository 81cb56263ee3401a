"""Runs N worker processes, restarts the ones that die or get stuck, stops them all.

The supervisor is deliberately small and does no ingest work itself: a worker that
crashes, leaks or wedges its event loop affects its own connections only, and the
supervisor (which must outlive every worker) has nothing that could crash with it.

- A worker is a child process in its own session, so a Ctrl-C in the terminal
  reaches the supervisor alone, which then stops the workers in order.
- Start: every worker must say `ready`; one that exits first fails the start with a
  one-line error (a bad database URL should not become an endless restart loop).
- Afterwards a worker that exits, or stops sending `alive` for `watchdog` seconds
  (SIGKILLed then: a stuck loop cannot run a SIGTERM handler), is logged with its
  exit status or signal and restarted after a backoff that grows from 0.5 s to 30 s
  while restarts keep failing and starts over once a worker has run for a while.
  Before its first line a worker gets a minute: an interpreter starting on a busy
  machine is slow, and that is not a stuck loop.
- Stop: SIGTERM to every worker (they stop their publishers within their shutdown
  grace), SIGKILL for any still running after `stop_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from .link import ALIVE, READY

log = logging.getLogger("stream_sync.workers")
WATCHDOG = 30.0  # seconds without a sign of life before a worker counts as stuck
FIRST_SIGN = 60.0  # until its first line: an interpreter starting on a busy machine is slow


class WorkerStartError(Exception):
    """A worker exited before it was ready; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    stable_after: float = 30.0  # a worker that ran this long failed for a new reason

    def delay(self, failures: int) -> float:
        """The wait before restart number `failures` in a row (1-based)."""
        return float(min(self.cap, self.first * self.factor ** max(0, failures - 1)))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class _Slot:
    """One worker position: the process currently filling it and its history."""

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.process: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()  # the current process listens
        self.first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None


class Supervisor:
    def __init__(
        self,
        *,
        count: int,
        command: Callable[[int], list[str]],
        name: Callable[[int], str],
        env: dict[str, str] | None = None,
        stop_timeout: float = 10.0,
        watchdog: float = WATCHDOG,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._command = command
        self._env = env
        self._stop_timeout = stop_timeout
        self._watchdog = watchdog
        self._backoff = backoff
        self._slots = [_Slot(i, name(i)) for i in range(1, count + 1)]
        self._stopping = asyncio.Event()

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids, in worker order (for `info` and benchmarks)."""
        return [
            slot.process.pid
            for slot in self._slots
            if slot.process is not None and slot.process.returncode is None
        ]

    def signal_all(self, sig: signal.Signals) -> None:
        """Pass a signal on to every running worker (SIGHUP: reload the certificate)."""
        for slot in self._slots:
            self._signal(slot, sig)

    async def start(self) -> None:
        """Start every worker and wait until all are ready; WorkerStartError if one is not."""
        loop = asyncio.get_running_loop()
        for slot in self._slots:
            slot.task = loop.create_task(self._keep(slot))
        try:
            await asyncio.gather(*(slot.first for slot in self._slots))
        except WorkerStartError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """SIGTERM every worker, SIGKILL the ones still running after stop_timeout."""
        self._stopping.set()
        if self.pids:
            log.info("stopping %d ingest workers", len(self.pids))
        for slot in self._slots:
            self._signal(slot, signal.SIGTERM)
        tasks = [slot.task for slot in self._slots if slot.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._stop_timeout)
        for slot in self._slots:
            if slot.task in pending:
                log.warning("ingest worker %s did not stop in time; killing it", slot.name)
                self._signal(slot, signal.SIGKILL)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_ready(self) -> None:
        """Until every worker is listening (after a restart too); for tests."""
        for slot in self._slots:
            await slot.ready.wait()

    # One slot's life ---------------------------------------------------------------------

    async def _keep(self, slot: _Slot) -> None:
        """Run the slot's worker, and replace it each time it ends, until stopped."""
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            ended = await self._run_once(slot)
            if self._stopping.is_set():
                return
            if not slot.first.done():  # never got ready on the first start
                slot.first.set_exception(
                    WorkerStartError(f"{ended} before it was ready; see its log above")
                )
                return
            lived = time.monotonic() - started
            failures = 1 if lived >= self._backoff.stable_after else failures + 1
            delay = self._backoff.delay(failures)
            log.warning("%s after %.1fs; restarting in %.1fs", ended, lived, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _run_once(self, slot: _Slot) -> str:
        """Run one worker process to its end; how it ended, as the log tells it."""
        slot.ready.clear()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command(slot.index),
                stdin=asyncio.subprocess.PIPE,  # the lifeline: closed when we die
                stdout=asyncio.subprocess.PIPE,  # ready / alive
                stderr=None,  # logs go straight to our stderr
                env=self._env,
                start_new_session=True,  # a terminal's Ctrl-C is ours to pass on
            )
        except OSError as exc:  # no process at all (out of processes or memory): retry later
            return f"ingest worker {slot.name} could not be started ({exc})"
        slot.process = process
        log.info("ingest worker %s started (pid %d)", slot.name, process.pid)
        if self._stopping.is_set():  # stop() ran while this one was being spawned
            self._signal(slot, signal.SIGTERM)
        try:
            await self._listen(slot, process)
            returncode = await process.wait()
        finally:
            slot.ready.clear()
            if process.returncode is None:  # cancelled: never leave a worker behind
                process.kill()
                await process.wait()
            if process.stdin is not None:
                process.stdin.close()
        return f"ingest worker {slot.name} (pid {process.pid}) {describe_exit(returncode)}"

    async def _listen(self, slot: _Slot, process: asyncio.subprocess.Process) -> None:
        """Read the worker's status lines until it exits; kill it when it goes silent."""
        assert process.stdout is not None
        timeout = max(self._watchdog, FIRST_SIGN)
        while True:
            try:
                line = await asyncio.wait_for(process.stdout.readline(), timeout)
            except TimeoutError:
                if self._stopping.is_set():
                    continue  # shutting down says nothing; stop() bounds how long it may take
                log.error(
                    "ingest worker %s (pid %d) gave no sign of life for %.0fs; killing it",
                    slot.name,
                    process.pid,
                    timeout,
                )
                process.kill()
                return
            timeout = self._watchdog
            if not line:
                return  # its end of the pipe closed: it is exiting
            if line == READY and not slot.ready.is_set():
                slot.ready.set()
                if not slot.first.done():
                    slot.first.set_result(None)
                else:
                    log.info("ingest worker %s is back (pid %d)", slot.name, process.pid)
            elif line != ALIVE:
                log.debug("ingest worker %s said %r", slot.name, line[:80])

    def _signal(self, slot: _Slot, sig: signal.Signals) -> None:
        process = slot.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
