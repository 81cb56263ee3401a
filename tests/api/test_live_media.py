"""Live pictures and the playback preview through the API: owner and admins only; asking
for a picture keeps them coming every few seconds (ThumbnailDemand); the preview is a
signed redirect to the node that holds the stream."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs, urlsplit

from stream_sync.api import thumbnails as demand
from stream_sync.api.context import LiveStream
from stream_sync.api.deps import SESSION_COOKIE
from stream_sync.credentials import playback
from stream_sync.credentials import service as credentials
from stream_sync.db.models import Role
from stream_sync.state.inprocess import InProcessBus, InProcessThumbnails
from stream_sync.state.interfaces import NodeInfo, Thumbnail, ThumbnailsWanted

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


async def test_preview_redirects_to_the_node_that_holds_the_stream(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "studio", None)
    internal = await channel_id(api, channel["id"])
    url = f"/api/channels/{channel['id']}/preview"
    assert (await admin.get(url)).status_code == 404  # not live

    def live(video: str, audio: str) -> None:
        api.live.streams[internal] = LiveStream(
            internal, "k", "c1", "edge-w2", 5.0, {"video": video, "audio": audio}, {}, 0
        )

    live("hvc1", "mp4a")
    unsupported = await admin.get(url)
    assert unsupported.status_code == 409
    assert "hvc1" in unsupported.json()["error"]["message"]

    live("avc1", "mp4a")
    nowhere = await admin.get(url)  # no node serves playback for it (none registered)
    assert nowhere.status_code == 503
    assert nowhere.json()["error"]["code"] == "preview_unavailable"

    async def nodes() -> list[NodeInfo]:
        edge = NodeInfo("edge-w2", "rtmp://edge/live", 10, 0, playback_url="http://edge:9001")
        return [NodeInfo("edge-w1", "rtmp://edge/live", 10, 0, playback_url="http://x:1"), edge]

    api.context.nodes = nodes
    redirect = await admin.get(url)
    assert redirect.status_code == 307
    assert redirect.headers["cache-control"] == "no-store"
    location = urlsplit(redirect.headers["location"])
    assert (location.scheme, location.netloc, location.path) == (
        "http",
        "edge:9001",
        f"/play/{internal}.flv",
    )
    query = parse_qs(location.query)
    until = int(query["until"][0])
    assert playback.verify(api.context.secrets, internal, until, query["sig"][0], time.time())


async def test_a_page_gone_before_its_snapshot_ends_its_socket_quietly(api: Api) -> None:
    """A network drop between the WebSocket's accept and the snapshot: no error, no log."""
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "studio", None)
    cookie = admin.cookies.get(SESSION_COOKIE)
    assert cookie
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": f"/api/channels/{channel['id']}/live",
        "raw_path": f"/api/channels/{channel['id']}/live".encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"cookie", f"{SESSION_COOKIE}={cookie}".encode())],
        "client": ("203.0.113.7", 40000),
        "server": ("testserver", 80),
        "subprotocols": [],
    }
    sent: list[str] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(str(message["type"]))
        if message["type"] == "websocket.send":
            raise OSError("the page's network went away")  # as uvicorn's ClientDisconnected

    await api.app(scope, receive, send)  # returns: nothing raised out of the route
    assert sent == ["websocket.accept", "websocket.send"]
