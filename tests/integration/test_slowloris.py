"""Garbage and slowloris in the suite, scaled down (benchmarks/slowloris.py: 2,000 and 20)."""

from __future__ import annotations

import pytest

from benchmarks.slowloris import KINDS, SWEEP, parse_args, run
from tests.support import debian_ffmpeg

ATTACKERS = 200


@pytest.mark.ffmpeg
def test_bad_connections_are_closed_in_time_while_publishers_stream_on() -> None:
    debian_ffmpeg()  # skips (fails under CI=true) without FFmpeg
    args = parse_args(
        ["--attackers", str(ATTACKERS), "--publishers", "3", "--seconds", "10",
         "--handshake-timeout", "1.5", "--publish-timeout", "3", "--no-write"]
    )  # fmt: skip
    result = run(args)
    assert result.exit_codes == [0, 0, 0]
    expected = result.seconds * result.file_rate
    assert len(result.publisher_bytes) == 3
    assert all(0.95 * expected <= sent <= 1.1 * expected for sent in result.publisher_bytes)
    assert result.publisher_reasons == ["client stopped (FCUnpublish)"] * 3  # none was cut
    for kind in KINDS:
        assert result.tally.opened[kind] > 0, kind
        assert result.late(kind) <= 2 * SWEEP + 0.5, kind  # closed by its deadline's sweep
    assert result.closed_reasons["no publish within N s"] > 0  # loiterers met that timeout
    grown = result.rss_kib["peak under attack"] - result.rss_kib["with publishers"]
    assert grown < ATTACKERS * 256  # KiB; the 4 KiB first buffer keeps it near 50 each
