"""The receive low-water mark follows each stream's bitrate, and drops when it goes quiet."""

from __future__ import annotations

import pytest

from stream_sync.ingest.batching import DEFAULT_MARK, MIN_MARK, next_mark

LIMIT = 32 * 1024


def test_a_stream_gets_a_batch_of_its_own_bitrate() -> None:
    # 4.7 Mbit/s is 587 kB/s: 100 ms of it is 58 kB, more than the read buffer allows.
    assert next_mark(DEFAULT_MARK, 293_750, 0.5, 0.1, LIMIT) == LIMIT
    # 1 Mbit/s: 12.5 kB per 100 ms.
    assert next_mark(DEFAULT_MARK, 62_500, 0.5, 0.1, LIMIT) == 12_500


def test_a_slow_stream_reads_every_byte_at_once() -> None:
    slow = (MIN_MARK - 1) * 5  # just under MIN_MARK per 100 ms over half a second
    assert next_mark(DEFAULT_MARK, slow, 0.5, 0.1, LIMIT) == DEFAULT_MARK


@pytest.mark.parametrize("sent", [0, -5])
def test_a_quiet_stream_gets_the_default_mark_back(sent: int) -> None:
    """So the tail waiting below the mark is read now, not when more arrives."""
    assert next_mark(20_000, sent, 0.5, 0.1, LIMIT) == DEFAULT_MARK


def test_a_wobble_keeps_the_mark_and_a_real_change_moves_it() -> None:
    assert next_mark(20_000, 110_000, 0.5, 0.1, LIMIT) == 20_000  # 22 kB: within a quarter
    assert next_mark(20_000, 50_000, 0.5, 0.1, LIMIT) == 10_000  # halved


def test_batching_off() -> None:
    assert next_mark(20_000, 500_000, 0.5, 0.0, LIMIT) == DEFAULT_MARK
