"""The coalescer: concurrent calls answered together, each caller with its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from stream_sync.state.coalesce import Coalescer


class Recorded:
    """A batch function that records its batches and can be held mid-flight."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def __call__(self, keys: Sequence[int]) -> list[int]:
        self.batches.append(list(keys))
        self.entered.set()
        await self.gate.wait()
        return [key * 10 for key in keys]


async def test_a_lone_call_is_answered_at_once() -> None:
    run = Recorded()
    assert await Coalescer(run)(4) == 40
    assert run.batches == [[4]]


async def test_calls_of_one_loop_turn_go_out_together() -> None:
    run = Recorded()
    coalescer = Coalescer(run)
    assert await asyncio.gather(*(coalescer(key) for key in range(5))) == [0, 10, 20, 30, 40]
    assert run.batches == [[0, 1, 2, 3, 4]]


async def test_calls_during_a_batch_wait_for_the_next_one() -> None:
    run = Recorded()
    run.gate.clear()
    coalescer = Coalescer(run, in_flight=1)
    first = asyncio.ensure_future(coalescer(1))
    await run.entered.wait()
    later = [asyncio.ensure_future(coalescer(key)) for key in (2, 3, 4)]
    await asyncio.sleep(0)
    assert run.batches == [[1]]  # nothing more goes out while one is in flight
    run.gate.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40]
    assert run.batches == [[1], [2, 3, 4]]


async def test_batches_are_bounded() -> None:
    run = Recorded()
    coalescer = Coalescer(run, max_batch=2, in_flight=1)
    assert await asyncio.gather(*(coalescer(key) for key in range(5))) == [0, 10, 20, 30, 40]
    assert run.batches == [[0, 1], [2, 3], [4]]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    calls = 0

    async def flaky(keys: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database went away")
        return list(keys)

    coalescer = Coalescer(flaky)
    results = await asyncio.gather(coalescer(1), coalescer(2), return_exceptions=True)
    assert [type(result) for result in results] == [ConnectionError, ConnectionError]
    assert await coalescer(3) == 3  # the next batch is a new attempt


async def test_a_caller_that_gave_up_is_left_out() -> None:
    run = Recorded()
    run.gate.clear()
    coalescer = Coalescer(run, in_flight=1)
    first = asyncio.ensure_future(coalescer(1))
    await run.entered.wait()
    quitter = asyncio.ensure_future(coalescer(2))
    stayer = asyncio.ensure_future(coalescer(3))
    await asyncio.sleep(0)
    quitter.cancel()
    run.gate.set()
    assert await first == 10
    assert await stayer == 30
    assert run.batches == [[1], [3]]


async def test_a_batch_function_must_answer_every_key() -> None:
    async def short(keys: Sequence[int]) -> list[int]:
        return list(keys)[:-1]

    coalescer = Coalescer(short)
    with pytest.raises(RuntimeError, match="a batch of 2 got 1 answers"):
        await asyncio.gather(coalescer(1), coalescer(2))


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Recorded(), in_flight=0)


async def test_calls_close_together_linger_and_go_out_together() -> None:
    run = Recorded()
    coalescer = Coalescer(run, linger=0.05)
    assert await coalescer(1) == 10  # after a quiet spell: at once
    second = asyncio.ensure_future(coalescer(2))  # right after another one: it lingers
    for _ in range(3):
        await asyncio.sleep(0)  # turns of the loop: a lone call would have gone out
    assert run.batches == [[1]]
    third = asyncio.ensure_future(coalescer(3))
    assert await asyncio.gather(second, third) == [20, 30]
    assert run.batches == [[1], [2, 3]]


def test_a_linger_is_at_most_a_second() -> None:
    with pytest.raises(ValueError, match="linger"):
        Coalescer(Recorded(), linger=2.0)
