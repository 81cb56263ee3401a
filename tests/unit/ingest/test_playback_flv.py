"""FLV as playback writes it, read back by FFmpeg's own demuxer (PyAV)."""

from __future__ import annotations

import io

import av

from stream_sync.ingest.playback import VIDEO, Reader, flv_header, flv_tag
from stream_sync.rtmp import flv
from stream_sync.rtmp.flvfile import read_tags


def test_tags_carry_size_and_32_bit_time_as_the_format_says() -> None:
    tag = flv_tag(VIDEO, 0x12345678, b"\x17\x01\x00\x00\x00abc")
    assert tag[:11] == bytes.fromhex("09 000008 345678 12 000000")
    assert tag[11:-4] == b"\x17\x01\x00\x00\x00abc"
    assert tag[-4:] == (11 + 8).to_bytes(4, "big")  # PreviousTagSize
    assert flv_header(audio=True, video=False)[4] == 4
    assert flv_header(audio=False, video=True)[4] == 1


def test_ffmpeg_reads_what_playback_writes() -> None:
    """A real H.264 stream cut into tags (FFmpeg's FLV muxer as the source), rewritten."""
    source = io.BytesIO()
    with av.open(source, "w", format="flv") as out:
        stream = out.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(15):
            frame = av.VideoFrame(64, 48, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(i * 16) % 256]) * plane.buffer_size)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    tags = read_tags(source.getvalue())
    rewritten = flv_header(audio=False, video=True) + b"".join(
        flv_tag(kind, stamp, body) for kind, stamp, body in tags
    )
    with av.open(io.BytesIO(rewritten), format="flv") as back:
        frames = list(back.decode(video=0))
    assert len(frames) == 15
    assert any(
        kind == VIDEO and flv.classify_video(body[0], body[1]) == flv.KEYFRAME
        for kind, _, body in tags
    )


def test_a_reader_that_falls_behind_is_ended_not_grown() -> None:
    reader = Reader(limit=100)
    reader.send(b"x" * 60)
    reader.send(b"y" * 60)  # 120 > 100: dropped, and what it held goes
    assert reader.ended == "fell behind"
    reader.send(b"z")
    assert reader.ended == "fell behind"
