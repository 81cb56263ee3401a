"""A real H.264/AAC stream (FFmpeg's FLV, cut into its tags) to feed recordings, and
checks of what a recording's file holds."""

from __future__ import annotations

import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from stream_sync.ingest.protocol import RtmpProtocol
from stream_sync.ingest.recording import RecordingLimits, Recordings, RecordingSink
from stream_sync.recordings import flv as layout
from stream_sync.rtmp import amf0, flv
from stream_sync.rtmp.flvfile import read_tags
from tests.support import debian_ffmpeg, ffmpeg_command

SECONDS, FPS = 6, 15  # a keyframe a second (-g 15)
AUDIO, VIDEO, DATA = 8, 9, 18
Tag = tuple[int, int, bytes, bool]  # type, time in ms, payload, keyframe


@dataclass
class Source:
    """What a recording reads of the publish feeding it (the fields of an RtmpProtocol)."""

    metadata: dict[str, Any]
    video_sequence: bytes | None
    audio_sequence: bytes | None
    session_id: int | None = 42
    sinks: list[RecordingSink] = field(default_factory=list)

    def attach_sink(self, sink: RecordingSink) -> None:
        self.sinks.append(sink)

    def as_publish(self) -> RtmpProtocol:
        return cast(RtmpProtocol, self)


@dataclass(frozen=True)
class Stream:
    source: Source
    tags: list[Tag]  # every media message, codec records included, as an encoder sends them


def make_stream(path: Path) -> Stream:
    """SECONDS of FFmpeg's test pattern and a sine, encoded to ``path`` and read back."""
    subprocess.run(
        ffmpeg_command(debian_ffmpeg(), str(path), seconds=SECONDS, realtime=False),
        check=True,
        timeout=60,
    )
    metadata: dict[str, Any] = {}
    video = audio = None
    tags: list[Tag] = []
    for kind, stamp, body in read_tags(path.read_bytes()):
        if kind == DATA:
            metadata = dict(amf0.decode_all(body)[1])
            continue
        if kind == VIDEO and video is None and body[1] == 0:
            video = bytes(body)
        if kind == AUDIO and audio is None and body[1] == 0:
            audio = bytes(body)
        keyframe = kind == VIDEO and flv.classify_video(body[0], body[1]) == flv.KEYFRAME
        tags.append((kind, stamp, bytes(body), keyframe))
    return Stream(Source(metadata, video, audio), tags)


def recordings(folder: Path, sessions: Any = None, **limits: Any) -> Recordings:
    return Recordings(
        folder=folder, node="edge", limits=RecordingLimits(**limits), sessions=sessions
    )


def feed(sink: RecordingSink, tags: list[Tag], shift: int = 0) -> None:
    for kind, stamp, body, keyframe in tags:
        sink.media(kind, stamp + shift, body, keyframe)


def files_of(folder: Path) -> list[Path]:
    return sorted((folder / "7").glob("*.flv"), key=lambda p: int(p.stem.split("-p")[-1]))


def written(path: Path) -> tuple[dict[str, Any], list[tuple[int, int, bytes]]]:
    """The part's onMetaData and its other tags, checked for the layout every part has."""
    data = path.read_bytes()
    tags = read_tags(data)
    kind, stamp, body = tags[0]
    assert (kind, stamp) == (DATA, 0)
    name, metadata = amf0.decode_all(body)
    assert name == "onMetaData"
    assert list(metadata)[:2] == ["duration", "filesize"]
    assert metadata["filesize"] == len(data)  # patched in at the end
    assert (
        struct.unpack(">d", data[layout.DURATION_AT : layout.DURATION_AT + 8])[0]
        == (metadata["duration"])
    )
    return dict(metadata), tags[1:]


def first_frame(tags: list[tuple[int, int, bytes]]) -> tuple[int, int, bytes]:
    """The first tag that is not a codec record: a keyframe, if the part is right."""
    for kind, stamp, body in tags:
        classify = flv.classify_video if kind == VIDEO else flv.classify_audio
        if classify(body[0], body[1]) != flv.COLLECT:
            return kind, stamp, body
    raise AssertionError("no frames")


def is_keyframe(tag: tuple[int, int, bytes]) -> bool:
    kind, _, body = tag
    return kind == VIDEO and flv.classify_video(body[0], body[1]) == flv.KEYFRAME
