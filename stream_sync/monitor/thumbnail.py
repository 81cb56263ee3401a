"""A live stream's keyframe as a small JPEG: what the dashboard shows as its preview.

One keyframe decoded in process (PyAV, FFmpeg's decoders) costs a few milliseconds
at 720p; decoding every frame would cost a core per few streams. So a thumbnail is
made from one keyframe with its codec configuration record (the sequence start),
and nothing else: no decoder state is kept between thumbnails. Pure: bytes in,
JPEG out; the ingest node decides when (issue 11).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import av.error
from av.video.codeccontext import VideoCodecContext

from ..rtmp import flv
from ..rtmp.flvfile import read_tags

__all__ = ["DECODERS", "ThumbnailError", "render", "warm_up"]

# FourCC (as the monitor reports it) -> FFmpeg decoder. The configuration record is
# the decoder's extradata for each (avcC, hvcC, av1C; VP9 needs none).
DECODERS = {"avc1": "h264", "hvc1": "hevc", "av01": "libdav1d", "vp09": "vp9"}
DEFAULT_WIDTH = 320
WARM_UP = Path(__file__).with_name("warmup.flv")  # FFmpeg's testsrc2, one 160x90 H.264 frame


class ThumbnailError(Exception):
    """The keyframe could not be turned into a picture (reason in the message)."""


def render(codec: str, config: bytes, keyframe: bytes, *, width: int = DEFAULT_WIDTH) -> bytes:
    """The keyframe as a JPEG ``width`` pixels wide (never wider than the picture)."""
    name = DECODERS.get(codec)
    if name is None:
        raise ThumbnailError(f"no thumbnail for codec {codec!r}")
    try:
        decoder = cast(VideoCodecContext, av.CodecContext.create(name, "r"))
        # One picture: decoder threads cost more to start than they save, and the
        # deblocking filter's work vanishes in the downscale (3.7 to 3.1 ms at 720p).
        decoder.thread_type = "NONE"
        decoder.thread_count = 1
        decoder.options = {"skip_loop_filter": "all"}
        if config:
            decoder.extradata = config
        frames = [*decoder.decode(av.Packet(keyframe)), *decoder.decode(None)]
    except (av.error.FFmpegError, ValueError) as exc:
        raise ThumbnailError(f"{codec} keyframe did not decode: {exc}") from None
    if not frames:
        raise ThumbnailError(f"{codec} keyframe gave no picture")
    picture = frames[0]
    if picture.width < 2 or picture.height < 2:
        raise ThumbnailError(f"{codec} picture of {picture.width}x{picture.height}")
    out_width = min(width, picture.width) // 2 * 2  # 4:2:0 wants even sizes
    out_height = max(2, round(picture.height * out_width / picture.width / 2) * 2)
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = out_width, out_height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    scaled = picture.reformat(
        width=out_width, height=out_height, format="yuvj420p", interpolation="AREA"
    )
    packets = [*encoder.encode(scaled), *encoder.encode(None)]
    return b"".join(bytes(packet) for packet in packets)


def warm_up() -> bytes:
    """One picture of a tiny built-in stream, so FFmpeg's code and tables load now.

    A process's first picture touches some 2 MB of decoder code and tables that stay:
    a fixed cost of the feature, paid at start rather than by the first stream.
    """
    config = keyframe = b""
    for type_id, _, payload in read_tags(WARM_UP.read_bytes()):
        if type_id == 9:
            for packet in flv.parse_video(payload):
                if packet.kind is flv.PacketKind.SEQUENCE_START:
                    config = packet.body
                elif packet.keyframe and not keyframe:
                    keyframe = packet.body
    return render("avc1", config, keyframe)
