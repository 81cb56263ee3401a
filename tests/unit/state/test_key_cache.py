"""The key cache on both engines: cache-aside with tombstones that beat racing fills."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stream_sync.state.interfaces import CachedKey, KeyState

from .conftest import SHORT_TTL, Engine

TTL = 60.0


def valid(key_id: str = "AbCdEfGh1234", **changes: object) -> CachedKey:
    fields: dict[str, object] = {
        "key_id": key_id,
        "state": KeyState.VALID,
        "key_hash": bytes(range(32)),
        "channel_id": 7,
        "channel_name": "main stage",
        "expires_at": datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        "fresh_until": 1_700_000_123.25,
    }
    fields.update(changes)
    return CachedKey(**fields)  # type: ignore[arg-type]


async def test_a_miss_is_none(engine: Engine) -> None:
    assert await engine.cache.get("NoSuchKeyId0") is None


async def test_fill_stores_every_field(engine: Engine) -> None:
    entry = valid()
    assert await engine.cache.fill(entry, TTL) is True
    assert await engine.cache.get(entry.key_id) == entry
    unknown = CachedKey("Unknown12345", KeyState.UNKNOWN, fresh_until=5.0)
    assert await engine.cache.fill(unknown, TTL) is True
    assert await engine.cache.get(unknown.key_id) == unknown


async def test_fill_keeps_what_is_there(engine: Engine) -> None:
    first = valid()
    await engine.cache.fill(first, TTL)
    assert await engine.cache.fill(valid(channel_name="other"), TTL) is False
    assert await engine.cache.get(first.key_id) == first


async def test_a_tombstone_wins_over_a_fill_that_raced_with_it(engine: Engine) -> None:
    # The fill read the database before the revocation committed; it arrives late.
    await engine.cache.tombstone("AbCdEfGh1234", TTL)
    assert await engine.cache.fill(valid(), TTL) is False
    cached = await engine.cache.get("AbCdEfGh1234")
    assert cached is not None
    assert cached.state is KeyState.REVOKED
    assert cached.key_hash is None


async def test_a_tombstone_overwrites_a_valid_entry(engine: Engine) -> None:
    await engine.cache.fill(valid(), TTL)
    await engine.cache.tombstone("AbCdEfGh1234", TTL)
    cached = await engine.cache.get("AbCdEfGh1234")
    assert cached is not None
    assert cached.state is KeyState.REVOKED


async def test_replace_overwrites(engine: Engine) -> None:
    await engine.cache.fill(valid(), TTL)
    refreshed = valid(fresh_until=1_800_000_000.5, expires_at=None)
    await engine.cache.replace(refreshed, TTL)
    assert await engine.cache.get(refreshed.key_id) == refreshed


async def test_replace_fills_a_miss(engine: Engine) -> None:
    await engine.cache.replace(valid(), TTL)
    assert await engine.cache.get("AbCdEfGh1234") == valid()


async def test_entries_expire_after_their_ttl(engine: Engine) -> None:
    await engine.cache.fill(valid(), SHORT_TTL)

    async def gone() -> bool:
        return await engine.cache.get("AbCdEfGh1234") is None

    await engine.let_expire(SHORT_TTL, gone)
    assert await engine.cache.fill(valid(), TTL) is True  # a miss again, so a fill lands


async def test_replace_restarts_the_ttl(engine: Engine) -> None:
    await engine.cache.fill(valid(), 10.0)
    await engine.age(8.0, "key", "AbCdEfGh1234")
    await engine.cache.replace(valid(), 10.0)
    await engine.age(8.0, "key", "AbCdEfGh1234")
    assert await engine.cache.get("AbCdEfGh1234") == valid()


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("inf"), float("nan")])
async def test_a_ttl_must_be_positive_and_finite(engine: Engine, ttl: float) -> None:
    with pytest.raises(ValueError, match="TTL"):
        await engine.cache.fill(valid(), ttl)
    with pytest.raises(ValueError, match="TTL"):
        await engine.cache.tombstone("AbCdEfGh1234", ttl)


async def test_a_refresh_never_undoes_a_tombstone(engine: Engine) -> None:
    """A refresh that read the database just before a revocation committed must lose."""
    await engine.cache.tombstone("AbCdEfGh1234", TTL, 7)
    await engine.cache.replace(valid(), TTL)
    found = await engine.cache.get("AbCdEfGh1234")
    assert found is not None
    assert found.state is KeyState.REVOKED
    assert found.channel_id == 7
    await engine.cache.replace(valid(key_id="Other0000000"), TTL)  # no tombstone: stored
    other = await engine.cache.get("Other0000000")
    assert other is not None
    assert other.state is KeyState.VALID
