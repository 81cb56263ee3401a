"""Live pictures on both engines: the latest per channel, gone after their TTL."""

from __future__ import annotations

from stream_sync.state.interfaces import Thumbnail

from .conftest import SHORT_TTL, Engine

TTL = 90.0
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"  # binary-safe: every byte value


async def test_the_latest_picture_of_each_channel_is_kept(engine: Engine) -> None:
    assert await engine.thumbnails.get(1) is None
    await engine.thumbnails.put(1, Thumbnail(JPEG, 1_700_000_000.125), TTL)
    await engine.thumbnails.put(2, Thumbnail(b"other", 1_700_000_001.0), TTL)
    await engine.thumbnails.put(1, Thumbnail(JPEG[::-1], 1_700_000_002.5), TTL)
    assert await engine.thumbnails.get(1) == Thumbnail(JPEG[::-1], 1_700_000_002.5)
    assert await engine.thumbnails.get(2) == Thumbnail(b"other", 1_700_000_001.0)


async def test_a_picture_goes_after_its_ttl(engine: Engine) -> None:
    await engine.thumbnails.put(7, Thumbnail(JPEG, 1.0), SHORT_TTL)

    async def gone() -> bool:
        return await engine.thumbnails.get(7) is None

    await engine.let_expire(SHORT_TTL, gone)


async def test_a_renewed_picture_lives_a_new_ttl(engine: Engine) -> None:
    await engine.thumbnails.put(3, Thumbnail(JPEG, 1.0), TTL)
    await engine.age(TTL - 1, "thumb", 3)
    await engine.thumbnails.put(3, Thumbnail(JPEG, 2.0), TTL)
    await engine.age(2, "thumb", 3)
    assert await engine.thumbnails.get(3) == Thumbnail(JPEG, 2.0)
