"""Brute force in the suite: a thousand wrong keys (benchmarks/bruteforce.py runs ten thousand)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bruteforce import attacked_node, brute_force

LIMIT, CONCURRENCY = 10, 16  # the address's failure limit (the default); attacker connections


async def test_a_thousand_wrong_keys_find_nothing_and_cost_the_database_little(
    tmp_path: Path,
) -> None:
    async with attacked_node(tmp_path / "data", None, delay=0.05) as node:
        attack = await brute_force(node, attempts=1000, concurrency=CONCURRENCY, owners=3)
    assert sum(attack.answers.values()) == 1000
    assert attack.answers["started"] == 0
    # Until the block, at most one failure per connection in flight gets past the limit;
    # after it, no attempt reaches the key check.
    checked = attack.answers["Invalid stream key."]
    assert LIMIT <= checked <= LIMIT + CONCURRENCY
    assert attack.answers["Too many failed attempts from this address; try again in N s."] == (
        1000 - checked
    )
    assert attack.database_lookups <= checked + 3  # the attacker's key ids and the owners'
    assert attack.key_statements <= attack.database_lookups
    assert attack.owner_publishes > 0
    assert attack.owner_refused == 0
    assert attack.guard["address_blocked"] == 1000 - checked + 1  # every refusal, and the block
