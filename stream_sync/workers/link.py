"""The two pipes between a worker and its supervisor, and the settings it is started with.

- Settings: the supervisor resolves them once (options over the environment, the
  port it reserved, the worker count) and hands them over whole, as JSON in the
  worker's environment, so every worker runs exactly the same configuration.
- Standard output, worker to supervisor: one line `ready` once the worker listens,
  then `alive` every second from its event loop. A worker that stops sending is
  stuck, and the supervisor replaces it (supervisor.py).
- Standard input, supervisor to worker: nothing is ever written; end of file means
  the supervisor is gone (even SIGKILLed), and the worker shuts down gracefully
  instead of living on as an orphan that keeps the port.

Workers log to the standard error they share with the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable

from pydantic import ValidationError

from ..settings import Settings, SettingsError

log = logging.getLogger("stream_sync.workers")
SETTINGS_ENV = "STREAM_SYNC_WORKER_SETTINGS"
READY = b"ready\n"
ALIVE = b"alive\n"
ALIVE_EVERY = 1.0  # seconds


def worker_environment(settings: Settings) -> dict[str, str]:
    """The supervisor's environment plus its resolved settings (secrets pass through)."""
    return {**os.environ, SETTINGS_ENV: settings.model_dump_json()}


def settings_from_supervisor() -> Settings:
    raw = os.environ.get(SETTINGS_ENV)
    if raw is None:
        raise SettingsError("--worker-index is set by stream-sync's supervisor, not by hand")
    try:
        return Settings.model_validate_json(raw)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"]
        raise SettingsError(f"unusable settings from the supervisor: {message}") from None


class SupervisorLink:
    """The worker's end: tells the supervisor it is ready and alive, hears it go away."""

    def __init__(self, on_lost: Callable[[], None]) -> None:
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._ticker: asyncio.Task[None] | None = None
        self._reading = False

    def start(self) -> None:
        os.set_blocking(sys.stdout.fileno(), False)  # a stopped supervisor never stalls us
        self._loop.add_reader(sys.stdin.fileno(), self._readable)
        self._reading = True
        self._ticker = self._loop.create_task(self._tick())

    def ready(self) -> None:
        self._send(READY)

    def close(self) -> None:
        if self._reading:
            self._loop.remove_reader(sys.stdin.fileno())
            self._reading = False
        if self._ticker is not None:
            self._ticker.cancel()

    async def _tick(self) -> None:
        while True:
            self._send(ALIVE)
            await asyncio.sleep(ALIVE_EVERY)

    def _send(self, line: bytes) -> None:
        with contextlib.suppress(OSError):  # full pipe (supervisor stopped) or gone
            os.write(sys.stdout.fileno(), line)

    def _readable(self) -> None:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # the supervisor never writes; ignore anything that arrives
        self._loop.remove_reader(sys.stdin.fileno())
        self._reading = False
        log.warning("the supervisor is gone; shutting down")
        self._on_lost()
