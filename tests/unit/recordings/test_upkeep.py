"""A node's upkeep of its recordings: parts a crash left open are repaired and closed,
expired files and rows go (this node's only), and nothing else is touched."""

from __future__ import annotations

import os
import struct
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync.audit import Actor
from stream_sync.credentials import ServerSecrets
from stream_sync.credentials import service as credentials
from stream_sync.db.models import utcnow
from stream_sync.ingest.recording import RecordingSink
from stream_sync.recordings import files, rows, upkeep
from stream_sync.recordings import flv as layout
from stream_sync.recordings.rows import PartEnd, PartRow, RecordingStatus
from tests.support import decode_errors, probe_file

from .media import SECONDS, Stream, feed, recordings, written

pytestmark = pytest.mark.ffmpeg


async def channel_id(sessions: async_sessionmaker[AsyncSession], secrets: ServerSecrets) -> int:
    async with sessions() as session:
        created = await credentials.create_channel(
            session, secrets=secrets, name="studio", actor=Actor.cli()
        )
    return created.channel_id


async def add_row(
    sessions: async_sessionmaker[AsyncSession],
    channel: int,
    path: str,
    *,
    node: str = "edge",
    days_ago: float = 0,
    status: RecordingStatus = RecordingStatus.COMPLETE,
) -> int:
    started = utcnow() - timedelta(days=days_ago)
    part = PartRow(channel, node, path, 1, started, None)
    async with sessions() as session:
        recording_id = await rows.start_part(session, part=part)
    if status != RecordingStatus.RECORDING:
        end = PartEnd(status, started + timedelta(hours=1), 10, 1000, "stream ended", None)
        async with sessions() as session:
            await rows.finish_part(session, recording_id=recording_id, part=part, end=end)
    return recording_id


async def test_parts_left_open_by_a_crash_are_trimmed_patched_and_closed(
    stream: Stream,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
    server_secrets: ServerSecrets,
) -> None:
    channel = await channel_id(sessions, server_secrets)
    folder = tmp_path / "recordings"
    service = recordings(folder)
    sink = RecordingSink(service, channel, "studio")
    sink.attach(stream.source.as_publish(), None)
    feed(sink, stream.tags)
    await sink.close()
    await service.close()
    [path] = sorted((folder / str(channel)).glob("*.flv"))
    finished = path.read_bytes()
    # As the file was when the node died: numbers not patched yet, the last tag half written.
    zero = struct.pack(">d", 0.0)
    crashed = bytearray(finished[:-30])
    crashed[layout.DURATION_AT : layout.DURATION_AT + 8] = zero
    crashed[layout.FILESIZE_AT : layout.FILESIZE_AT + 8] = zero
    path.write_bytes(crashed)
    relative = f"{channel}/{path.name}"
    left_open = await add_row(sessions, channel, relative, status=RecordingStatus.RECORDING)
    missing = await add_row(
        sessions, channel, f"{channel}/gone-p1.flv", status=RecordingStatus.RECORDING
    )
    elsewhere = await add_row(
        sessions, channel, relative, node="other", status=RecordingStatus.RECORDING
    )

    assert await upkeep.recover(sessions, folder, "edge") == 2

    async with sessions() as session:
        found = {row.id: row for row in await rows.list_recordings(session, channel_id=channel)}
    repaired = found[left_open]
    assert (repaired.status, repaired.end_reason) == ("complete", upkeep.LEFT_OPEN)
    assert repaired.bytes == path.stat().st_size < len(crashed)  # the half tag is gone
    metadata, tags = written(path)  # the size and duration are patched in
    assert repaired.duration_ms == tags[-1][1]
    assert metadata["duration"] == repaired.duration_ms / 1000
    _, duration = probe_file(path)
    assert SECONDS - 0.3 <= duration <= SECONDS
    assert decode_errors(path) == ""
    assert (found[missing].status, found[missing].end_reason) == ("failed", "the file is missing")
    assert found[elsewhere].status == "recording"  # another node's: it repairs its own


async def test_expired_recordings_of_this_node_go_files_and_rows(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], server_secrets: ServerSecrets
) -> None:
    channel = await channel_id(sessions, server_secrets)
    folder = tmp_path / "recordings"
    (folder / str(channel)).mkdir(parents=True)
    month_ago = time.time() - 31 * 86_400

    def file(name: str, *, old: bool) -> str:
        relative = f"{channel}/{name}.flv"
        (folder / relative).write_bytes(b"FLV")
        if old:
            os.utime(folder / relative, (month_ago, month_ago))
        return relative

    expired = await add_row(sessions, channel, file("expired", old=True), days_ago=31)
    recent = await add_row(sessions, channel, file("recent", old=False), days_ago=1)
    writing = await add_row(
        sessions, channel, file("writing", old=True), days_ago=31, status=RecordingStatus.RECORDING
    )
    other = await add_row(sessions, channel, f"{channel}/other.flv", node="other", days_ago=31)
    file("orphan", old=True)  # its row went while its node could not hear it
    file("orphan-recent", old=False)

    purged = await upkeep.purge(
        sessions, folder, "edge", days=30, writing={f"{channel}/writing.flv"}
    )

    assert purged == upkeep.Purged(rows=1, files=2)
    async with sessions() as session:
        left = {row.id for row in await rows.list_recordings(session, channel_id=channel)}
    assert left == {recent, writing, other}
    assert expired not in left
    assert sorted(p.name for p in (folder / str(channel)).iterdir()) == [
        "orphan-recent.flv",
        "recent.flv",
        "writing.flv",
    ]
    assert await upkeep.purge(sessions, folder, "edge", days=0) == upkeep.Purged(0, 0)


@pytest.mark.parametrize(
    "path",
    [
        "../secrets/hmac.key",
        "/etc/passwd",
        "7/../../x.flv",
        "7/a/b.flv",
        "7/.hidden.flv",
        "7/x.txt",
    ],
)
def test_a_path_that_is_not_a_recordings_is_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(files.UnsafePath):
        files.resolve(tmp_path, path)


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    (folder / "7").mkdir(parents=True)
    (tmp_path / "secret.flv").write_bytes(b"secret")
    (folder / "7" / "link.flv").symlink_to(tmp_path / "secret.flv")
    with pytest.raises(files.UnsafePath):
        files.resolve(folder, "7/link.flv")
    assert files.resolve(folder, "7/studio-p1.flv") == (folder / "7" / "studio-p1.flv").resolve()
