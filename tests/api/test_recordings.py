"""Recordings through the API: the record switch, the list, downloads (here, or a signed
redirect to the node that has the file) and deletion, for the owner and admins only;
strangers get 404, every deletion and switch leaves an audit row."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from stream_sync.credentials import playback
from stream_sync.credentials import service as credentials
from stream_sync.db.models import Role, utcnow
from stream_sync.ingest.playback import PlaybackHub
from stream_sync.ingest.playback_http import playback_app
from stream_sync.recordings import rows
from stream_sync.recordings.rows import PartEnd, PartRow, RecordingStatus
from stream_sync.state.interfaces import NodeInfo, OutputsChanged, RecordingDeleted

from .conftest import Api

FLV = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00" + b"recorded media" * 100


async def channel_id(api: Api, public_id: str) -> int:
    async with api.context.sessions() as session:
        return (await credentials.find_channel(session, public_id)).id


async def recorded(
    api: Api,
    channel: int,
    name: str,
    *,
    node: str | None = None,
    status: RecordingStatus = RecordingStatus.COMPLETE,
    minutes_ago: int = 0,
) -> tuple[int, Path]:
    """A recording's row, and its file when it is on this server's disk."""
    node = node or api.context.settings.server_name
    relative = f"{channel}/{name}.flv"
    path = api.context.settings.recordings_path() / relative
    if node == api.context.settings.server_name:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(FLV)
    started = utcnow() - timedelta(minutes=minutes_ago)
    part = PartRow(channel, node, relative, 1, started, 42)
    async with api.context.sessions() as session:
        recording_id = await rows.start_part(session, part=part)
    if status != RecordingStatus.RECORDING:
        end = PartEnd(status, started + timedelta(seconds=30), len(FLV), 30_000, "stream ended", 42)
        async with api.context.sessions() as session:
            await rows.finish_part(session, recording_id=recording_id, part=part, end=end)
    return recording_id, path


async def test_the_owner_turns_recording_on_and_the_live_node_hears_it(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    owner = await api.signed_in("olga@example.com")
    stranger = await api.signed_in("mallory@example.com")
    channel = await api.channel(admin, "olgas", "olga@example.com")
    internal = await channel_id(api, channel["id"])
    url = f"/api/channels/{channel['id']}"
    assert (await owner.get(url)).json()["record"] is False

    assert (await stranger.patch(url, json={"record": True})).status_code == 404
    answer = await owner.patch(url, json={"record": True})
    assert answer.status_code == 200, answer.text
    assert answer.json()["record"] is True
    assert (await api.bus.wait_for(OutputsChanged)).channel_id == internal
    audit = (await owner.get(f"{url}/audit")).json()
    change = next(row for row in audit if row["action"] == "channel.settings_changed")
    assert change["details"] == {"record": True}
    assert change["actor"] == "olga@example.com"

    await owner.patch(url, json={"grace_seconds": 10})  # not about outputs: nothing to hear
    assert len(api.bus.of(OutputsChanged)) == 1
    assert (await admin.patch(url, json={"record": False})).json()["record"] is False
    await api.bus.until(lambda: len(api.bus.of(OutputsChanged)) == 2)


async def test_owner_and_admin_list_and_download_strangers_get_404(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    owner = await api.signed_in("olga@example.com")
    stranger = await api.signed_in("mallory@example.com")
    channel = await api.channel(admin, "olgas", "olga@example.com")
    internal = await channel_id(api, channel["id"])
    first, _ = await recorded(api, internal, "olgas-20270202-100000-p1", minutes_ago=60)
    second, _ = await recorded(api, internal, "olgas-20270202-110000-p1", minutes_ago=5)
    live, _ = await recorded(
        api, internal, "olgas-20270202-120000-p1", status=RecordingStatus.RECORDING
    )
    base = f"/api/channels/{channel['id']}/recordings"

    for client in (owner, admin):
        listed = (await client.get(base)).json()
        assert [item["id"] for item in listed] == [live, second, first]  # newest first
    item = listed[1]
    assert (item["status"], item["part"], item["session_id"]) == ("complete", 1, 42)
    assert (item["bytes"], item["duration_ms"]) == (len(FLV), 30_000)
    assert item["file_name"] == "olgas-20270202-110000-p1.flv"
    assert item["download_url"] == f"{base}/{second}/download"
    assert listed[0]["status"] == "recording"
    growing = await owner.get(f"{base}/{live}/download")
    assert growing.status_code == 409
    assert growing.json()["error"]["code"] == "recording_in_progress"
    page = (await owner.get(base, params={"limit": 1, "before": live})).json()
    assert [item["id"] for item in page] == [second]

    download = await owner.get(f"{base}/{second}/download")
    assert download.status_code == 200
    assert download.content == FLV
    assert download.headers["content-type"] == "video/x-flv"
    assert download.headers["content-disposition"] == (
        'attachment; filename="olgas-20270202-110000-p1.flv"'
    )
    assert (await admin.get(f"{base}/{first}/download")).content == FLV

    for method, path in [
        ("GET", base),
        ("GET", f"{base}/{second}/download"),
        ("DELETE", f"{base}/{second}"),
    ]:
        response = await stranger.request(method, path)
        assert response.status_code == 404, (method, path)
    other = await api.channel(admin, "mallorys", "mallory@example.com")
    # Another channel's recording id under one's own channel: not found either.
    crossed = await stranger.get(f"/api/channels/{other['id']}/recordings/{second}/download")
    assert crossed.status_code == 404
    assert crossed.json()["error"]["code"] == "recording_not_found"
    assert (await owner.get(f"{base}/{2**63}/download")).status_code == 422
    assert (await owner.get(f"{base}/0/download")).status_code == 422


async def test_a_file_on_another_node_is_a_signed_redirect_there(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    channel = await api.channel(admin, "studio", None)
    internal = await channel_id(api, channel["id"])
    elsewhere, _ = await recorded(api, internal, "studio-20270202-100000-p1", node="edge-w2")
    url = f"/api/channels/{channel['id']}/recordings/{elsewhere}/download"

    away = await admin.get(url)  # the node is not running
    assert away.status_code == 503
    assert away.json()["error"]["code"] == "recording_unavailable"

    async def nodes() -> list[NodeInfo]:
        return [NodeInfo("edge-w2", "rtmp://edge/live", 10, 0, playback_url="http://edge:9002")]

    api.context.nodes = nodes
    redirect = await admin.get(url)
    assert redirect.status_code == 307
    assert redirect.headers["cache-control"] == "no-store"
    location = urlsplit(redirect.headers["location"])
    path = f"{internal}/studio-20270202-100000-p1.flv"
    assert (location.scheme, location.netloc, location.path) == (
        "http",
        "edge:9002",
        f"/recordings/{path}",
    )
    query = parse_qs(location.query)
    until = int(query["until"][0])
    assert playback.verify_download(api.context.secrets, path, until, query["sig"][0], time.time())
    assert not playback.verify_download(
        api.context.secrets, f"{internal}/other.flv", until, query["sig"][0], time.time()
    )


async def test_the_node_serves_a_signed_download_and_refuses_the_rest(
    api: Api, tmp_path: Path
) -> None:
    folder = tmp_path / "node-recordings"
    (folder / "7").mkdir(parents=True)
    (folder / "7" / "studio-p1.flv").write_bytes(FLV)
    (tmp_path / "outside.flv").write_bytes(b"not yours")
    (folder / "7" / "escape.flv").symlink_to(tmp_path / "outside.flv")
    secrets = api.context.secrets
    app = playback_app(PlaybackHub(None), secrets, folder)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as node:

        def signed(path: str, until: int) -> str:
            signature = playback.sign_download(secrets, path, until)
            return f"/recordings/{path}?until={until}&sig={signature}"

        later = int(time.time()) + 60
        answer = await node.get(signed("7/studio-p1.flv", later))
        assert answer.status_code == 200
        assert answer.content == FLV
        assert answer.headers["content-disposition"] == 'attachment; filename="studio-p1.flv"'
        assert (await node.get(signed("7/studio-p1.flv", int(time.time()) - 1))).status_code == 403
        forged = signed("7/studio-p1.flv", later).replace("7/studio-p1", "7/studio-p2")
        assert (await node.get(forged)).status_code == 403
        assert (await node.get("/recordings/7/studio-p1.flv")).status_code == 403
        assert (await node.get(signed("7/escape.flv", later))).status_code == 404
        assert (await node.get(signed("7/missing.flv", later))).status_code == 404


async def test_deleting_a_recording_is_audited_and_its_file_goes(api: Api) -> None:
    admin = await api.signed_in("root@example.com", Role.ADMIN)
    owner = await api.signed_in("olga@example.com")
    channel = await api.channel(admin, "olgas", "olga@example.com")
    internal = await channel_id(api, channel["id"])
    here, path = await recorded(api, internal, "olgas-20270202-100000-p1")
    there, _ = await recorded(api, internal, "olgas-20270202-110000-p1", node="edge-w2")
    live, live_path = await recorded(
        api, internal, "olgas-20270202-120000-p1", status=RecordingStatus.RECORDING
    )
    base = f"/api/channels/{channel['id']}/recordings"

    busy = await owner.delete(f"{base}/{live}")
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "recording_in_progress"
    assert live_path.exists()

    assert (await owner.delete(f"{base}/{here}")).status_code == 204
    assert not path.exists()
    assert (await owner.delete(f"{base}/{here}")).status_code == 404
    assert (await admin.delete(f"{base}/{there}")).status_code == 204
    deleted = await api.bus.wait_for(RecordingDeleted)  # its node deletes the file
    assert (deleted.node, deleted.path) == ("edge-w2", f"{internal}/olgas-20270202-110000-p1.flv")
    assert [item["id"] for item in (await owner.get(base)).json()] == [live]

    audit = (await owner.get(f"/api/channels/{channel['id']}/audit")).json()
    rows_deleted = [row for row in audit if row["action"] == "recording.deleted"]
    assert [(row["actor"], row["details"]["recording_id"]) for row in rows_deleted] == [
        ("root@example.com", there),
        ("olga@example.com", here),
    ]
    assert rows_deleted[1]["details"]["bytes"] == len(FLV)
