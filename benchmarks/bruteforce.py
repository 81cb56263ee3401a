"""Brute force against a live node: wrong keys from one address, owners from another.

    .venv/bin/python -m benchmarks.bruteforce [--attempts 10000] [--database-url URL]

One attacker on 127.0.0.2 tries random stream keys over `--concurrency`
connections while `--owners` channels' owners publish again and again from
127.0.0.1 with their right keys. Reported: keys found (must be 0), every SQL
statement that read stream keys during the attack (must stay near the address's
failure limit, however many attempts), the owners' publishes and their admission
times. Then the key comparison's timing, with the same key id: the right secret, a
near miss (last character changed) and a random secret, interleaved, checked
against the cache as a live node does. Writes benchmarks/results/bruteforce.md
unless --no-write.

The attack uses a short refusal delay (--delay) so that ten thousand attempts fit
in minutes; with the default 5 s one address gets 32 connections / 5 s = 6.4
attempts a second. The bounds on database work do not depend on the delay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import random
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.credentials.keys import BASE62_ALPHABET, KEY_PREFIX, base62_token
from stream_sync.node import Node, open_store
from stream_sync.rtmp.client import (
    ClientConnection,
    Connected,
    ConnectRefused,
    PublishStarted,
    StatusReceived,
)
from stream_sync.settings import Settings

from .report import show

RESULTS = Path(__file__).parent / "results" / "bruteforce.md"
ATTACKER, OWNER = "127.0.0.2", "127.0.0.1"


async def try_key(port: int, key: str, source: str) -> tuple[str, float]:
    """One publish attempt: ("started" or the refusal's description, seconds to the answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    client = ClientConnection(
        app="live", tc_url=f"rtmp://127.0.0.1:{port}/live", now=time.monotonic()
    )
    began = time.monotonic()
    try:
        async with asyncio.timeout(30):
            published = False
            while True:
                writer.write(client.data_to_send())
                data = await reader.read(65536)
                if not data:
                    return "closed", time.monotonic() - began
                for event_ in client.receive_data(data):
                    if isinstance(event_, Connected) and not published:
                        client.publish(key)
                        published = True
                    elif isinstance(event_, PublishStarted):
                        return "started", time.monotonic() - began
                    elif isinstance(event_, StatusReceived | ConnectRefused):
                        return str(event_.info.get("description")), time.monotonic() - began
    except (ConnectionError, TimeoutError) as exc:
        return type(exc).__name__, time.monotonic() - began
    finally:
        writer.close()


def wrong_key(key_id: str | None = None) -> str:
    return f"{KEY_PREFIX}{key_id or base62_token(12)}_{base62_token(43)}"


@dataclass
class Attack:
    attempts: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    key_statements: int = 0  # SQL statements that read stream keys
    database_lookups: int = 0  # key ids the checker looked up
    owner_publishes: int = 0
    owner_refused: int = 0
    owner_waits: list[float] = field(default_factory=list)
    guard: dict[str, int] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def attacked_node(
    data_dir: Path, database_url: str | None, delay: float, **extra: Any
) -> AsyncIterator[Node]:
    settings = Settings(
        data_dir=data_dir,
        host="127.0.0.1",
        rtmp_port=0,
        http_port=0,
        database_url=database_url,
        max_refusal_delay=delay,
        **extra,
    )
    async with open_store(settings) as store:
        node = Node(settings, store)
        await node.start()
        try:
            yield node
        finally:
            await node.stop()


async def make_channels(node: Node, prefix: str, count: int) -> list[service.CreatedChannel]:
    created = []
    async with node.sessions() as session:
        for i in range(count):
            created.append(
                await service.create_channel(
                    session, secrets=node.store.secrets, name=f"{prefix}-{i}", actor=Actor.cli()
                )
            )
    return created


async def brute_force(node: Node, attempts: int, concurrency: int, owners: int) -> Attack:
    """Attempts from ATTACKER while the owners publish from OWNER; the tally."""
    result = Attack(attempts=attempts)
    channels = await make_channels(node, "owner", owners)
    statements = [0]

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "stream_keys" in statement:
            statements[0] += 1

    engine = node.store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    lookups = node.checker.database_lookups
    port = node.rtmp_port
    remaining = attempts
    done = asyncio.Event()

    async def attacker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            answer, _ = await try_key(port, wrong_key(), ATTACKER)
            result.answers[re.sub(r"\d+ s\.$", "N s.", answer)] += 1

    async def owner(channel: service.CreatedChannel) -> None:
        while not done.is_set():
            answer, waited = await try_key(port, channel.key, OWNER)
            result.owner_publishes += 1
            if answer == "started":
                result.owner_waits.append(waited)
            else:
                result.owner_refused += 1

    began = time.monotonic()
    owner_tasks = [asyncio.create_task(owner(channel)) for channel in channels]
    try:
        await asyncio.gather(*(attacker() for _ in range(concurrency)))
    finally:
        result.seconds = time.monotonic() - began
        done.set()
        await asyncio.gather(*owner_tasks)
        event.remove(engine, "before_cursor_execute", count)
    result.key_statements = statements[0]
    result.database_lookups = node.checker.database_lookups - lookups
    result.guard = dict(node.ingest.guard.counts)
    return result


@dataclass
class Timing:
    rounds: int
    medians_ns: dict[str, float]
    spread_ns: float  # half the interquartile range of the near-miss timings


async def comparison_timing(node: Node, rounds: int) -> Timing:
    """check() with one key id: right, near-miss and random secrets, interleaved, warm cache."""
    (channel,) = await make_channels(node, "timed", 1)
    key = channel.key
    samples: dict[str, list[int]] = {"right": [], "near miss": [], "random": []}
    checker = node.checker
    await checker.check(key)  # fill the cache first: no database below
    for _ in range(rounds):
        # Fresh strings every round for all three, in a shuffled order: only the
        # content differs, not allocation or position.
        last = random.choice([c for c in BASE62_ALPHABET if c != key[-1]])
        candidates = [
            ("right", "".join(key)),
            ("near miss", key[:-1] + last),
            ("random", wrong_key(channel.key_id)),
        ]
        random.shuffle(candidates)
        for name, presented in candidates:
            began = time.perf_counter_ns()
            verdict = await checker.check(presented)
            samples[name].append(time.perf_counter_ns() - began)
            assert verdict.ok == (name == "right"), name
    near_q = statistics.quantiles(samples["near miss"], n=4)
    return Timing(
        rounds,
        {name: statistics.median(values) for name, values in samples.items()},
        (near_q[2] - near_q[0]) / 2,
    )


def report(attack: Attack, timing: Timing, args: argparse.Namespace) -> str:
    waits = sorted(attack.owner_waits)
    p50 = statistics.median(waits) * 1000 if waits else float("nan")
    p99 = waits[int(len(waits) * 0.99) - 1] * 1000 if waits else float("nan")
    answers = "\n".join(f"| {answer} | {count} |" for answer, count in attack.answers.most_common())
    guard = ", ".join(f"{k} {v}" for k, v in sorted(attack.guard.items()))
    medians = timing.medians_ns
    postgres = " --database-url <PostgreSQL>" if args.database_url else ""
    return f"""# Brute force against a live node

Command: `.venv/bin/python -m benchmarks.bruteforce --attempts {args.attempts} --concurrency \
{args.concurrency} --owners {args.owners} --delay {args.delay}{postgres}`
({time.strftime("%Y-%m-%d")}, {platform.machine()}, {platform.python_version()},
database {"PostgreSQL" if args.database_url else "SQLite (embedded)"}; other settings default:
10 failed publishes per address within 60 s block it for 300 s).

## {attack.attempts} wrong keys from {ATTACKER}

Attack time {attack.seconds:.1f} s ({attack.attempts / attack.seconds:.0f} attempts/s).

| Answer to the attacker | Attempts |
|---|---|
{answers}

- Keys found: **{attack.answers.get("started", 0)}**.
- SQL statements reading stream keys during the attack: **{attack.key_statements}**
  (key ids looked up: {attack.database_lookups}); the address was blocked after its
  failure limit, and blocked attempts never reach the key check.
- Guard counters: {guard}.
- Owners on {OWNER}, publishing throughout: {attack.owner_publishes} publishes,
  {attack.owner_refused} refused; admission p50 {p50:.1f} ms, p99 {p99:.1f} ms.

## Key comparison timing ({timing.rounds} interleaved rounds, warm cache)

| Presented | Median ns |
|---|---|
| right key | {medians["right"]:.0f} |
| same key id, near-miss secret (last character) | {medians["near miss"]:.0f} |
| same key id, random secret | {medians["random"]:.0f} |

Near miss minus random: {medians["near miss"] - medians["random"]:+.0f} ns, against a
spread (half the interquartile range) of {timing.spread_ns:.0f} ns. The check computes the
HMAC-SHA256 of the whole presented key and compares 32-byte digests with
`hmac.compare_digest`, so how much of the secret is right cannot change the time.
"""


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        async with attacked_node(Path(folder), args.database_url, args.delay) as node:
            print(f"attack: {args.attempts} wrong keys over {args.concurrency} connections")
            attack = await brute_force(node, args.attempts, args.concurrency, args.owners)
            print(f"timing: {args.rounds} rounds")
            timing = await comparison_timing(node, args.rounds)
    text = report(attack, timing, args)
    show(text, RESULTS, write=not args.no_write)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--owners", type=int, default=5)
    parser.add_argument("--delay", type=float, default=0.05, help="max refusal delay, s")
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
