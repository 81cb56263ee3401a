"""The recording writer on a real H.264/AAC stream: what the files hold, where parts
end, time across a reconnect, the bound on what waits for the disk, and the rows. The
files are read back by our FLV reader and decoded by FFmpeg."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stream_sync.audit import Actor
from stream_sync.credentials import ServerSecrets
from stream_sync.credentials import service as credentials
from stream_sync.db import create_engine, session_factory, sqlite_url
from stream_sync.ingest.recording import RecordingSink
from stream_sync.recordings import flv as layout
from stream_sync.recordings import rows
from tests.support import decode_errors, probe_file

from .media import (
    AUDIO,
    FPS,
    SECONDS,
    VIDEO,
    Source,
    Stream,
    feed,
    files_of,
    first_frame,
    is_keyframe,
    recordings,
    written,
)

pytestmark = pytest.mark.ffmpeg


async def test_a_recording_starts_with_its_records_and_a_keyframe_and_plays(
    stream: Stream, tmp_path: Path
) -> None:
    service = recordings(tmp_path)
    sink = RecordingSink(service, 7, "studio")
    sink.attach(stream.source.as_publish(), None)
    assert stream.source.sinks == [sink]
    late = next(i for i, tag in enumerate(stream.tags) if tag[1] > 300)  # mid-GOP, as usual
    feed(sink, stream.tags[late:])
    status = sink.status(0.0)
    assert (status["kind"], status["state"], status["part"]) == ("record", "recording", 1)
    await sink.close()
    await service.close()

    [path] = files_of(tmp_path)
    assert path.name.startswith("studio-")
    assert path.name.endswith("-p1.flv")
    metadata, tags = written(path)
    assert metadata["width"] == 320  # the source's own entries follow ours
    assert [(kind, body) for kind, _, body in tags[:2]] == [
        (VIDEO, stream.source.video_sequence),
        (AUDIO, stream.source.audio_sequence),
    ]
    assert is_keyframe(first_frame(tags))
    assert first_frame(tags)[1] == 0  # time starts at the keyframe
    assert tags[-1][1] / 1000 <= metadata["duration"]
    codecs, duration = probe_file(path)
    assert codecs == ["aac", "h264"]
    assert SECONDS - 1.2 <= duration <= SECONDS  # from the second keyframe on
    assert decode_errors(path) == ""
    assert sink.status(0.0)["state"] == "ended"
    # What the node's capacity counts: everything given to the disk but the file's start.
    start = len(layout.file_start(stream.source.metadata, audio=True, video=True))
    assert sink.sent_bytes == path.stat().st_size - start


async def test_a_part_ends_before_the_size_limit_and_the_next_starts_at_a_keyframe(
    stream: Stream, tmp_path: Path
) -> None:
    total = sum(len(body) + 15 for _, _, body, _ in stream.tags)
    limit = total // 3  # about two seconds: three or four parts
    service = recordings(tmp_path, max_bytes=limit)
    sink = RecordingSink(service, 7, "studio")
    sink.attach(stream.source.as_publish(), None)
    feed(sink, stream.tags)
    await sink.close()
    await service.close()

    parts = files_of(tmp_path)
    assert len(parts) >= 3
    assert [path.name.rsplit("-p", 1)[1] for path in parts] == [
        f"{n}.flv" for n in range(1, len(parts) + 1)
    ]
    seconds = 0.0
    for path in parts:
        assert path.stat().st_size <= limit
        metadata, tags = written(path)
        assert is_keyframe(first_frame(tags))
        assert decode_errors(path) == ""
        seconds += metadata["duration"]
    # Every part but the first starts at a keyframe the last one ended before: nothing lost
    # but a frame's time at each cut.
    assert SECONDS - 0.2 * len(parts) <= seconds <= SECONDS


async def test_a_part_ends_at_the_first_keyframe_past_the_duration_limit(
    stream: Stream, tmp_path: Path
) -> None:
    service = recordings(tmp_path, max_seconds=2.0)
    sink = RecordingSink(service, 7, "studio")
    sink.attach(stream.source.as_publish(), None)
    feed(sink, stream.tags)
    await sink.close()
    await service.close()

    parts = files_of(tmp_path)
    assert len(parts) == 3
    for path in parts:
        metadata, tags = written(path)
        assert is_keyframe(first_frame(tags))
        assert 1.9 <= metadata["duration"] <= 2.0  # keyframes a second apart
        assert decode_errors(path) == ""


async def test_a_reconnect_goes_on_in_the_same_file_with_time_going_on(
    stream: Stream, tmp_path: Path
) -> None:
    service = recordings(tmp_path)
    sink = RecordingSink(service, 7, "studio")
    first = stream.source
    sink.attach(first.as_publish(), None)
    cut = next(i for i, tag in enumerate(stream.tags) if tag[1] > 2500)
    feed(sink, stream.tags[:cut])  # then the encoder is killed
    sink.detach()
    assert sink.status(0.0)["state"] == "waiting"
    before = sink.status(0.0)["seconds"]

    again = Source(first.metadata, first.video_sequence, first.audio_sequence)
    sink.attach(again.as_publish(), 1500)  # back 1.5 s later: its clock starts at 0 again
    late = next(i for i, tag in enumerate(stream.tags) if tag[1] > 300)
    feed(sink, stream.tags[:2] + stream.tags[late:])  # its records, then frames from mid-GOP
    await sink.close()
    await service.close()

    [path] = files_of(tmp_path)
    _, tags = written(path)
    stamps = [stamp for _, stamp, _ in tags]
    assert stamps == sorted(stamps)  # never back in time
    resumed = next(
        i for i, tag in enumerate(tags) if tag[1] > before * 1000 + 1000 and is_keyframe(tag)
    )
    assert abs(tags[resumed][1] - (before * 1000 + 1500)) <= 100
    assert all(not is_keyframe(tag) or tag[1] <= before * 1000 for tag in tags[:resumed])
    # The same codec records are not written twice.
    assert sum(1 for kind, _, body in tags if body == first.video_sequence) == 1
    codecs, duration = probe_file(path)
    assert codecs == ["aac", "h264"]
    assert before + 1.5 + SECONDS - 1.2 <= duration <= before + 1.5 + SECONDS
    assert decode_errors(path) == ""


async def test_a_disk_that_falls_behind_bounds_memory_and_skips_to_a_keyframe(
    stream: Stream, tmp_path: Path
) -> None:
    bound = 64 * 1024
    service = recordings(tmp_path, behind_bytes=bound)
    sink = RecordingSink(service, 7, "studio")
    sink.attach(stream.source.as_publish(), None)
    stuck = threading.Event()
    disk = service.writer.run(stuck.wait)  # the writer's one thread waits: a stalled disk
    waiting = []
    for kind, stamp, body, keyframe in stream.tags:
        sink.media(kind, stamp, body, keyframe)
        waiting.append(sink._pending_bytes + sink._in_flight)
    assert max(waiting) <= bound
    assert sink.dropped >= 1
    assert sink.status(0.0)["dropped"] == sink.dropped
    stuck.set()
    await disk
    await service.writer.run(int)  # every write given before it is done
    feed(sink, stream.tags, shift=SECONDS * 1000)  # the disk is back: on from a keyframe
    await sink.close()
    await service.close()

    [path] = files_of(tmp_path)
    _, tags = written(path)
    assert is_keyframe(first_frame(tags))
    assert tags[-1][1] > SECONDS * 1000  # what came once the disk was back is there
    assert decode_errors(path) == ""
    # After every jump in time (what was skipped), the picture starts again at a keyframe.
    videos = [tag for tag in tags if tag[0] == VIDEO and tag[2][1] == 1]
    for previous, tag in itertools.pairwise(videos):
        if tag[1] - previous[1] > 1000 // FPS + 1:
            assert is_keyframe(tag)


async def test_a_folder_that_cannot_be_written_fails_the_recording_not_the_stream(
    stream: Stream, tmp_path: Path
) -> None:
    blocked = tmp_path / "recordings"
    blocked.write_text("a file where the folder should be")
    service = recordings(blocked)
    sink = RecordingSink(service, 7, "studio")
    sink.attach(stream.source.as_publish(), None)
    feed(sink, stream.tags[:60])
    await asyncio.wait_for(sink.close(), 5)
    await service.close()
    status = sink.status(0.0)
    assert status["state"] == "failed"
    assert status["reason"].startswith("disk error: ")


async def test_each_part_has_its_row(
    stream: Stream,
    tmp_path: Path,
    sessions: async_sessionmaker[AsyncSession],
    server_secrets: ServerSecrets,
) -> None:
    async with sessions() as session:
        channel = await credentials.create_channel(
            session, secrets=server_secrets, name="studio", actor=Actor.cli()
        )
    service = recordings(tmp_path, sessions, max_seconds=2.0)
    sink = RecordingSink(service, channel.channel_id, "studio")
    sink.attach(stream.source.as_publish(), None)
    feed(sink, stream.tags)
    await sink.close()
    await service.close()

    async with sessions() as session:
        found = await rows.list_recordings(session, channel_id=channel.channel_id)
    assert [row.part for row in found] == [3, 2, 1]  # newest first
    assert [row.end_reason for row in found] == [
        "stream ended",
        "duration limit",
        "duration limit",
    ]
    for row in found:
        assert (row.status, row.node, row.session_id) == ("complete", "edge", 42)
        assert row.bytes == (tmp_path / row.path).stat().st_size
        assert 1900 <= row.duration_ms <= 2000
        assert row.ended_at is not None
        assert row.ended_at >= row.started_at


async def test_a_database_that_is_away_costs_rows_not_the_recording(
    stream: Stream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(sqlite_url(tmp_path / "no such folder"))
    try:
        service = recordings(tmp_path / "recordings", session_factory(engine))
        sink = RecordingSink(service, 7, "studio")
        sink.attach(stream.source.as_publish(), None)
        feed(sink, stream.tags)
        await sink.close()
        await service.close()
    finally:
        await engine.dispose()
    [path] = files_of(tmp_path / "recordings")
    assert decode_errors(path) == ""
    assert "recording rows not written (the start of a part)" in caplog.text
