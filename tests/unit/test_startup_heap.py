"""Start-up's heap is frozen before the node listens (in a child: a frozen heap sticks).

The full collection that walks the frameworks' objects (some 100 ms) ran after the
node had said it was ready, and held up the first encoders of a restart's storm.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import asyncio, gc, sys
from stream_sync import cli
from stream_sync.admin.server import AlreadyRunningError
from stream_sync.node import ALL_ROLES
from stream_sync.settings import Settings

seen = []

async def start(self):
    seen.append(gc.get_freeze_count())
    raise AlreadyRunningError("stop here")

cli.Node.start = start
assert gc.get_freeze_count() == 0
try:
    asyncio.run(cli._serve(Settings(data_dir=sys.argv[1]), ALL_ROLES, 1, None))
except cli.CommandError:
    pass
print(*seen)
"""


def test_the_heap_is_frozen_before_the_node_starts(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = [int(count) for count in done.stdout.split()]
    assert len(seen) == 1
    assert seen[0] > 10_000, done.stdout  # the imports: frameworks, models, the app
