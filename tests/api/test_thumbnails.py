"""Live pictures through the API: owner and admins only, revalidated by ETag, and asking
for one is what keeps them coming every few seconds (ThumbnailDemand)."""

from __future__ import annotations

import asyncio

from stream_sync.api import thumbnails as demand
from stream_sync.credentials import service as credentials
from stream_sync.db.models import Role
from stream_sync.state.inprocess import InProcessBus, InProcessThumbnails
from stream_sync.state.interfaces import Thumbnail, ThumbnailsWanted

from .conftest import Api, FakeClock

JPEG = b"\xff\xd8\xff\xe0 a picture \xff\xd9"


async def channel_id(api: Api, public_id: str) -> int:
    async with api.context.sessions() as session:
        return (await credentials.find_channel(session, public_id)).id


async def test_the_owner_gets_the_latest_picture_and_strangers_get_404(api: Api) -> None:
    api.context.thumbnails = store = InProcessThumbnails()
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    owner = await api.signed_in("olga@example.com")
    stranger = await api.signed_in("mallory@example.com")
    channel = await api.channel(admin, "olgas", "olga@example.com")
    url = f"/api/channels/{channel['id']}/thumbnail"

    none_yet = await owner.get(url)
    assert none_yet.status_code == 404
    assert none_yet.json()["error"]["code"] == "not_found"

    internal = await channel_id(api, channel["id"])
    await store.put(internal, Thumbnail(JPEG, 1_700_000_000.25), 90)
    for client in (owner, admin):
        picture = await client.get(url)
        assert picture.status_code == 200
        assert picture.headers["content-type"] == "image/jpeg"
        assert picture.headers["cache-control"] == "private, no-cache"
        assert picture.content == JPEG
    assert (await stranger.get(url)).status_code == 404  # as if the channel did not exist

    etag = picture.headers["etag"]
    unchanged = await owner.get(url, headers={"If-None-Match": etag})
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    await store.put(internal, Thumbnail(JPEG[::-1], 1_700_000_005.0), 90)
    renewed = await owner.get(url, headers={"If-None-Match": etag})
    assert (renewed.status_code, renewed.content) == (200, JPEG[::-1])
    assert renewed.headers["etag"] != etag
    assert api.live.thumbnails_seen == [internal] * 5  # each of theirs, not the stranger's


async def test_without_a_picture_store_there_is_no_picture(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "plain", None)
    assert (await admin.get(f"/api/channels/{channel['id']}/thumbnail")).status_code == 404


async def wanted(subscription: object) -> ThumbnailsWanted:
    async with asyncio.timeout(2):
        event = await anext(subscription)  # type: ignore[call-overload]
    assert isinstance(event, ThumbnailsWanted)
    return event


async def test_demand_is_sent_at_once_when_it_grows_and_forgotten_after_hold() -> None:
    bus, clock = InProcessBus(), FakeClock(1000.0)
    open_pages: set[int] = set()
    tracker = demand.ThumbnailDemand(bus, lambda: open_pages, clock=clock)
    subscription = bus.subscribe()
    task = asyncio.create_task(tracker.run())
    try:
        tracker.seen(5)  # a picture fetched: sent without waiting for the next round
        first = await wanted(subscription)
        assert (first.channel_ids, first.until) == ([5], 1000.0 + demand.REPEAT * 3)

        open_pages.add(9)  # a page's WebSocket: wanted for as long as it is open
        clock.now += demand.HOLD  # the fetch is forgotten
        await tracker.send()
        assert (await wanted(subscription)).channel_ids == [9]

        open_pages.clear()
        await tracker.send()  # nothing wanted: nothing sent
        tracker.seen(9)
        assert (await wanted(subscription)).channel_ids == [9]
    finally:
        task.cancel()
        subscription.close()
        bus.close()
