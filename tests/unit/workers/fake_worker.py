"""A stand-in worker for the supervisor's tests: the real link, no ingest.

Usage: fake_worker.py MODE, where MODE is what it does once started:
serve (ready, then run until SIGTERM or until the supervisor goes away), fail (exit
3 before ready), stuck (ready, then block its event loop), stubborn (ready, ignore
SIGTERM).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from stream_sync.workers.link import SupervisorLink


async def main(mode: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    link = SupervisorLink(on_lost=stop.set)
    link.start()
    if mode == "fail":
        return 3
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    link.ready()
    if mode == "stuck":
        time.sleep(3600)  # noqa: ASYNC251 - the point: a wedged event loop
    await stop.wait()
    link.close()
    print(f"fake worker {mode} stopping", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
