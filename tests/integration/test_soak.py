"""A short soak in the suite (benchmarks/soak.py runs 50 streams for an hour)."""

from __future__ import annotations

import pytest

from benchmarks.soak import parse_args, soak_run, verdict
from tests.support import debian_ffmpeg


@pytest.mark.ffmpeg
def test_streams_coming_and_going_are_each_recorded_with_their_end_reason() -> None:
    debian_ffmpeg()  # skips (fails under CI=true) without FFmpeg
    args = parse_args(
        ["--streams", "5", "--minutes", "0.4", "--min-publish", "3", "--max-publish", "6",
         "--kill-share", "0.3", "--sample-every", "2", "--no-write"]
    )  # fmt: skip
    soak = soak_run(args)
    judged = verdict(soak)
    assert len(soak.publishes) >= 10
    assert judged.expected["grace expired"] > 0  # some encoders were killed...
    assert judged.expected["stopped"] > 0  # ...and some stopped
    assert judged.mismatched_slots == []
    assert judged.recorded == judged.expected
    assert judged.open_sessions == 0
    assert all(p.exit_code == (0 if p.clean else -9) for p in soak.publishes)
