"""FLV tag headers (legacy and Enhanced RTMP) and the media counters they drive."""

from __future__ import annotations

import itertools

import pytest

from stream_sync.rtmp import amf0, flv
from stream_sync.rtmp.counters import TIMESTAMP_JUMP_MS
from stream_sync.rtmp.errors import ProtocolError
from stream_sync.rtmp.events import CodecConfigured, MediaReceived, MetadataReceived
from stream_sync.rtmp.flv import MediaPacket
from stream_sync.rtmp.flv import PacketKind as K

from .test_chunk import aac, fill, inter, key
from .wire import CONFIG, SPLITS, h, publishing

N5, N8 = fill(5, 40), fill(8, 41)
AVCC = h("01 64000c ffe1 0019") + fill(25, 42)
HVCC = h("01 01600000") + fill(30, 43)
CFG = fill(4, 44)
META = amf0.encode("colorInfo", {"colorConfig": {}})
OPUS_HEAD = b"OpusHead" + h("01 01 3801 80bb0000 0000 00")


def P(codec, kind, track=0, keyframe=False, cts=0, body=b"", rate=None, stereo=None):
    return MediaPacket(codec, kind, track, keyframe, cts, body, rate, stereo)


VIDEO = [
    (
        "legacy AVC sequence header",
        h("17 00 000000") + AVCC,
        [P("avc1", K.SEQUENCE_START, body=AVCC)],
    ),
    (
        "legacy AVC keyframe, CTS 67",
        h("17 01 000043") + N8,
        [P("avc1", K.CODED_FRAMES, 0, True, 67, N8)],
    ),
    (
        "legacy AVC inter frame, CTS -2",
        h("27 01 fffffe") + N8,
        [P("avc1", K.CODED_FRAMES, 0, False, -2, N8)],
    ),
    ("legacy AVC end of sequence", h("17 02 000000"), [P("avc1", K.SEQUENCE_END)]),
    (
        "legacy HEVC id 12 sequence header",
        h("1c 00 000000") + HVCC,
        [P("hvc1", K.SEQUENCE_START, body=HVCC)],
    ),
    ("legacy VP6 keyframe", h("14") + N8, [P("vp6f", K.CODED_FRAMES, 0, True, 0, N8)]),
    ("legacy H.263 disposable frame", h("32") + N8, [P("h263", K.CODED_FRAMES, 0, False, 0, N8)]),
    ("legacy video command frame", h("57 01"), [P("avc1", K.COMMAND)]),
    ("legacy unknown codec id", h("1f") + N5, [P("codec15", K.CODED_FRAMES, 0, True, 0, N5)]),
    ("hvc1 SequenceStart", h("90") + b"hvc1" + HVCC, [P("hvc1", K.SEQUENCE_START, body=HVCC)]),
    (
        "hvc1 CodedFrames, SI24 CTS",
        h("91") + b"hvc1" + h("000043") + N8,
        [P("hvc1", K.CODED_FRAMES, 0, True, 67, N8)],
    ),
    (
        "avc1 CodedFrames, negative CTS",
        h("a1") + b"avc1" + h("ffffff") + N8,
        [P("avc1", K.CODED_FRAMES, 0, False, -1, N8)],
    ),
    (
        "vvc1 CodedFrames, SI24 CTS",
        h("a1") + b"vvc1" + h("000021") + N8,
        [P("vvc1", K.CODED_FRAMES, 0, False, 33, N8)],
    ),
    (
        "av01 CodedFrames have no CTS",
        h("91") + b"av01" + N8,
        [P("av01", K.CODED_FRAMES, 0, True, 0, N8)],
    ),
    ("vp09 CodedFramesX", h("a3") + b"vp09" + N8, [P("vp09", K.CODED_FRAMES, 0, False, 0, N8)]),
    (
        "hvc1 CodedFramesX: CTS implied 0",
        h("93") + b"hvc1" + N8,
        [P("hvc1", K.CODED_FRAMES, 0, True, 0, N8)],
    ),
    ("av01 SequenceStart", h("90") + b"av01" + CFG, [P("av01", K.SEQUENCE_START, body=CFG)]),
    ("vp09 SequenceStart", h("90") + b"vp09" + CFG, [P("vp09", K.SEQUENCE_START, body=CFG)]),
    ("av01 MPEG2TSSequenceStart", h("95") + b"av01" + CFG, [P("av01", K.SEQUENCE_START, body=CFG)]),
    (
        "Metadata: frame type 5, packet type 4",
        h("d4") + b"hvc1" + META,
        [P("hvc1", K.METADATA, body=META)],
    ),
    ("av01 SequenceEnd", h("92") + b"av01", [P("av01", K.SEQUENCE_END)]),
    ("enhanced command frame", h("d1 01"), [P("", K.COMMAND)]),
    (
        "ModEx timestamp nano offset, then avc1 CodedFrames",
        h("97 02 0f4240 01") + b"avc1" + h("000043") + N8,
        [P("avc1", K.CODED_FRAMES, 0, True, 67, N8)],
    ),
    (
        "ModEx with a 16-bit size, then SequenceStart",
        h("97 ff 0100") + fill(257, 45) + h("00") + b"hvc1" + HVCC,
        [P("hvc1", K.SEQUENCE_START, body=HVCC)],
    ),
    (
        "two ModEx in a row",
        h("97 00 aa 07 00 bb 01") + b"av01" + N8,
        [P("av01", K.CODED_FRAMES, 0, True, 0, N8)],
    ),
    (
        "multitrack OneTrack",
        h("96 01") + b"avc1" + h("01") + h("000043") + N8,
        [P("avc1", K.CODED_FRAMES, 1, True, 67, N8)],
    ),
    (
        "multitrack ManyTracks",
        h("96 10") + b"hvc1" + h("00 000004") + CFG + h("01 000005") + N5,
        [P("hvc1", K.SEQUENCE_START, 0, body=CFG), P("hvc1", K.SEQUENCE_START, 1, body=N5)],
    ),
    (
        "multitrack ManyTracksManyCodecs",
        h("a6 21") + b"avc1" + h("00 000008 000000") + N5 + b"av01" + h("02 000005") + N5,
        [P("avc1", K.CODED_FRAMES, 0, False, 0, N5), P("av01", K.CODED_FRAMES, 2, False, 0, N5)],
    ),
]

AUDIO = [
    (
        "AAC sequence header",
        h("af 00 1188"),
        [P("mp4a", K.SEQUENCE_START, body=h("1188"), rate=44100, stereo=True)],
    ),
    (
        "AAC raw frame",
        h("af 01") + N8,
        [P("mp4a", K.CODED_FRAMES, body=N8, rate=44100, stereo=True)],
    ),
    (
        "AAC flags 22 kHz mono",
        h("aa 01") + N5,
        [P("mp4a", K.CODED_FRAMES, body=N5, rate=22050, stereo=False)],
    ),
    ("MP3", h("2e") + N8, [P(".mp3", K.CODED_FRAMES, body=N8, rate=44100, stereo=False)]),
    ("Speex", h("b2") + N5, [P("speex", K.CODED_FRAMES, body=N5, rate=5512, stereo=False)]),
    ("G.711 A-law", h("72") + N5, [P("alaw", K.CODED_FRAMES, body=N5, rate=5512, stereo=False)]),
    (
        "legacy unknown format",
        h("f1") + N5,
        [P("codec15", K.CODED_FRAMES, body=N5, rate=5512, stereo=True)],
    ),
    (
        "Opus SequenceStart",
        h("90") + b"Opus" + OPUS_HEAD,
        [P("Opus", K.SEQUENCE_START, body=OPUS_HEAD)],
    ),
    ("Opus CodedFrames", h("91") + b"Opus" + N8, [P("Opus", K.CODED_FRAMES, body=N8)]),
    (
        "Opus MultichannelConfig",
        h("94") + b"Opus" + h("01 02 00000003"),
        [P("Opus", K.MULTICHANNEL_CONFIG, body=h("01 02 00000003"))],
    ),
    (
        "mp4a SequenceStart",
        h("90") + b"mp4a" + h("1190"),
        [P("mp4a", K.SEQUENCE_START, body=h("1190"))],
    ),
    ("fLaC SequenceStart", h("90") + b"fLaC" + CFG, [P("fLaC", K.SEQUENCE_START, body=CFG)]),
    ("ac-3 SequenceStart", h("90") + b"ac-3" + CFG, [P("ac-3", K.SEQUENCE_START, body=CFG)]),
    ("ec-3 SequenceStart", h("90") + b"ec-3" + CFG, [P("ec-3", K.SEQUENCE_START, body=CFG)]),
    ("Opus SequenceEnd", h("92") + b"Opus", [P("Opus", K.SEQUENCE_END)]),
    (
        "ModEx, then Opus CodedFrames",
        h("97 01 0003 01") + b"Opus" + N8,
        [P("Opus", K.CODED_FRAMES, body=N8)],
    ),
    (
        "multitrack OneTrack",
        h("95 00") + b"mp4a" + h("01") + CFG,
        [P("mp4a", K.SEQUENCE_START, 1, body=CFG)],
    ),
    (
        "multitrack ManyTracks",
        h("95 11") + b"Opus" + h("00 000002 aabb 01 000001 cc"),
        [P("Opus", K.CODED_FRAMES, 0, body=h("aabb")), P("Opus", K.CODED_FRAMES, 1, body=h("cc"))],
    ),
    (
        "multitrack ManyTracksManyCodecs",
        h("95 21") + b"Opus" + h("00 000001 aa") + b"mp4a" + h("01 000002 bbcc"),
        [P("Opus", K.CODED_FRAMES, 0, body=h("aa")), P("mp4a", K.CODED_FRAMES, 1, body=h("bbcc"))],
    ),
]


@pytest.mark.parametrize(("payload", "packets"), [c[1:] for c in VIDEO], ids=[c[0] for c in VIDEO])
def test_parse_video(payload: bytes, packets: list[MediaPacket]) -> None:
    assert flv.parse_video(payload) == packets


@pytest.mark.parametrize(("payload", "packets"), [c[1:] for c in AUDIO], ids=[c[0] for c in AUDIO])
def test_parse_audio(payload: bytes, packets: list[MediaPacket]) -> None:
    assert flv.parse_audio(payload) == packets


def test_multichannel_config() -> None:
    (packet,) = flv.parse_audio(h("94") + b"Opus" + h("01 06 0000003f"))
    assert flv.parse_multichannel_config(packet.body) == (1, 6)
    with pytest.raises(ProtocolError, match="multichannel config"):
        flv.parse_multichannel_config(h("01"))


@pytest.mark.parametrize(
    ("parse", "payload", "error"),
    [
        (flv.parse_video, b"", "truncated in video header"),
        (flv.parse_video, h("17"), "truncated in AVC packet type"),
        (flv.parse_video, h("17 01 00"), "truncated in composition time"),
        (flv.parse_video, h("17 03 000000"), "unknown AVC packet type 3"),
        (flv.parse_video, h("90 6876"), "truncated in FourCC"),
        (flv.parse_video, h("98") + b"avc1", "unknown enhanced video packet type 8"),
        (flv.parse_video, h("96 31") + b"avc1", "unknown video multitrack type 3"),
        (flv.parse_video, h("96 11") + b"hvc1" + h("00 0000ff 00"), "truncated in track body"),
        (flv.parse_video, h("91") + b"avc1" + h("00"), "truncated in composition time"),
        (flv.parse_video, h("97 05 00"), "truncated in ModEx data"),
        (flv.parse_video, h("d1"), "truncated in video command"),
        (flv.parse_audio, b"", "truncated in audio header"),
        (flv.parse_audio, h("af"), "truncated in AAC packet type"),
        (flv.parse_audio, h("93") + b"Opus", "unknown enhanced audio packet type 3"),
        (flv.parse_audio, h("95 31") + b"Opus", "unknown audio multitrack type 3"),
        (flv.parse_audio, h("95 21") + b"Op", "truncated in FourCC"),
    ],
)
def test_malformed_tags(parse, payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse(payload)


def test_hot_path_classification_agrees_with_the_parser() -> None:
    """For every first byte: what the hot path counts is what the full parse finds."""
    checked = 0
    for b0 in range(256):
        for b1 in (-1, 0, 1, 2, 3):
            if b0 & 0x80:  # enhanced: b1 is the FourCC's first byte, the body follows
                payload = bytes((b0,)) + (b"avc1" if b1 != -1 else b"av01") + bytes(8)
            else:
                payload = bytes((b0,)) + (bytes((b1,)) + bytes(8) if b1 != -1 else b"")
            for classify, parse in (
                (flv.classify_video, flv.parse_video),
                (flv.classify_audio, flv.parse_audio),
            ):
                action = classify(b0, payload[1] if len(payload) > 1 else -1)
                if action == flv.COLLECT:
                    continue  # the connection parses these whole
                try:
                    packets = parse(payload)
                except ProtocolError:
                    continue  # counted from the header; the parser would drop it
                checked += 1
                if action == flv.IGNORE:
                    assert [p.kind for p in packets] == [K.COMMAND]
                else:
                    (packet,) = packets
                    assert (packet.kind, packet.track) == (K.CODED_FRAMES, 0)
                    assert packet.keyframe == (action == flv.KEYFRAME)
    assert checked > 500


# Through the connection ---------------------------------------------------------------

MT_TRACK0 = h("a6 01") + b"avc1" + h("00 000000") + fill(180, 50)
MT_TRACK1 = h("96 01") + b"avc1" + h("01 000000") + fill(180, 51)
SCRIPT = [
    # (message type, timestamp, payload, what it is for the counters)
    (9, 0, h("17 00 000000") + AVCC, "config"),
    (8, 0, h("af 00 1190"), "config"),
    (9, 0, key(300), "key"),
    (8, 0, aac(200), "frame"),
    (9, 33, inter(250), "frame"),
    (8, 21, aac(180), "frame"),
    (9, 66, h("91") + b"hvc1" + h("000021") + fill(400, 52), "key"),
    (9, 100, h("a3") + b"hvc1" + fill(150, 53), "frame"),
    (9, 100, h("d4") + b"hvc1" + META, "none"),
    (9, 133, h("57 01"), "none"),
    (9, 166, MT_TRACK0, "frame"),
    (9, 200, MT_TRACK1, "none"),  # frames of other tracks count in bytes only
    (9, 233, h("97 02 0f4240 01") + b"avc1" + h("000000") + fill(140, 54), "key"),
    (8, 42, h("90") + b"Opus" + OPUS_HEAD, "config"),
    (8, 63, h("94") + b"Opus" + h("01 02 00000003"), "config"),
    (8, 84, h("91") + b"Opus" + fill(160, 55), "frame"),
    (8, 105, h("95 11") + b"Opus" + h("00 000003 aabbcc 01 000002 ddee"), "frame"),
    (8, 126, h("97 01 0003 01") + b"Opus" + fill(90, 56), "frame"),
    (9, 266, h("92") + b"hvc1", "none"),
    (9, 300, h("98") + b"avc1" + fill(10, 57), "malformed"),
    (8, 147, h("af"), "malformed"),
]
CONFIGS = [
    ("video", "avc1", 0, K.SEQUENCE_START),
    ("audio", "mp4a", 0, K.SEQUENCE_START),
    ("audio", "Opus", 0, K.SEQUENCE_START),
    ("audio", "Opus", 0, K.MULTICHANNEL_CONFIG),
]


def jumps(stamps: list[int]) -> int:
    """Forward steps over TIMESTAMP_JUMP_MS between consecutive frames."""
    return sum(b - a > TIMESTAMP_JUMP_MS for a, b in itertools.pairwise(stamps))


def expected_counters() -> dict[str, int]:
    video = [(ts, p, what) for t, ts, p, what in SCRIPT if t == 9]
    audio = [(ts, p, what) for t, ts, p, what in SCRIPT if t == 8]
    video_frames = [ts for ts, _, what in video if what in ("frame", "key")]
    keyframes = [ts for ts, _, what in video if what == "key"]
    audio_frames = [ts for ts, _, what in audio if what == "frame"]
    return {
        "video_messages": len(video),
        "video_bytes": sum(len(p) for _, p, _ in video),
        "video_frames": len(video_frames),
        "keyframes": len(keyframes),
        "last_video_ts": video_frames[-1],
        "last_keyframe_ts": keyframes[-1],
        "audio_messages": len(audio),
        "audio_bytes": sum(len(p) for _, p, _ in audio),
        "audio_frames": len(audio_frames),
        "last_audio_ts": audio_frames[-1],
        "timestamp_regressions": 0,
        "timestamp_jumps": jumps(video_frames) + jumps(audio_frames),
        "ignored_messages": 0,
        "malformed_messages": sum(what == "malformed" for *_, what in SCRIPT),
    }


@pytest.mark.parametrize("collect", [False, True], ids=["counting", "collect_media"])
@pytest.mark.parametrize("split", SPLITS)
def test_media_through_the_connection(split: str, collect: bool) -> None:
    server, peer = publishing(collect_media=collect)
    wire = b"".join(peer.message(6 if t == 9 else 4, t, 1, ts, p) for t, ts, p, _ in SCRIPT)
    server.feed(wire, split)
    assert server.conn.counters.as_dict() == expected_counters()
    configs = server.of(CodecConfigured)
    assert [(e.media, e.packet.codec, e.packet.track, e.packet.kind) for e in configs] == CONFIGS
    assert configs[0].packet.body == AVCC
    assert [e.timestamp for e in configs] == [0, 0, 42, 63]
    media = [(e.message_type, e.timestamp, e.payload) for e in server.of(MediaReceived)]
    assert media == ([(t, ts, p) for t, ts, p, _ in SCRIPT] if collect else [])


@pytest.mark.parametrize("collect", [False, True], ids=["counting", "collect_media"])
def test_timestamp_regressions_and_extended_timestamps(collect: bool) -> None:
    server, peer = publishing(collect_media=collect)
    for ts in (0x00FFFFF0, 0x01000010, 0x01000000, 0x01000040):
        server.feed(peer.video(ts, inter(300)) + peer.audio(ts, aac(200)))
    counters = server.conn.counters
    assert (counters.last_video_ts, counters.last_audio_ts) == (0x01000040, 0x01000040)
    assert counters.timestamp_regressions == 2  # once for video, once for audio


def test_counting_mode_counts_a_media_message_at_its_header() -> None:
    """By design the hot path counts as a message starts, so an abandoned one still counts."""
    for collect, frames in ((False, 2), (True, 1)):
        server, peer = publishing(collect_media=collect)
        server.feed(peer.video(0, key(300))[: 12 + 128])  # its first chunk, then...
        server.feed(peer.video(10, key(20)))  # ...a new header on the same chunk stream
        assert server.conn.counters.video_frames == frames


def flv_tag(tag_type: int, timestamp: int, payload: bytes) -> bytes:
    stamp = (timestamp & 0xFFFFFF).to_bytes(3, "big") + bytes((timestamp >> 24,))
    header = bytes((tag_type,)) + len(payload).to_bytes(3, "big") + stamp + bytes(3)
    return header + payload + (11 + len(payload)).to_bytes(4, "big")


AGGREGATE = (
    flv_tag(9, 1000, key(300))
    + flv_tag(8, 1010, aac(100))
    + flv_tag(18, 1020, amf0.encode("onMetaData", amf0.EcmaArray(width=320.0)))
    + flv_tag(9, 1033, inter(200))
)


@pytest.mark.parametrize("collect", [False, True], ids=["counting", "collect_media"])
def test_aggregate_messages_are_split_into_their_tags(collect: bool) -> None:
    server, peer = publishing(collect_media=collect)
    server.feed(peer.message(6, 22, 1, 5000, AGGREGATE), "random")
    counters = server.conn.counters
    assert (counters.video_messages, counters.video_frames, counters.keyframes) == (2, 2, 1)
    assert (counters.audio_messages, counters.audio_frames) == (1, 1)
    assert (counters.video_bytes, counters.audio_bytes) == (500, 100)
    assert counters.last_video_ts == 5033  # tag times are relative to the first tag
    (metadata,) = server.of(MetadataReceived)
    assert (metadata.timestamp, metadata.metadata) == (5020, {"width": 320.0})
    media = [(e.message_type, e.timestamp, e.payload) for e in server.of(MediaReceived)]
    expected = [(9, 5000, key(300)), (8, 5010, aac(100)), (9, 5033, inter(200))]
    assert media == (expected if collect else [])


def test_truncated_aggregate_refused() -> None:
    server, peer = publishing()
    with pytest.raises(ProtocolError, match="aggregate message with a truncated tag"):
        server.feed(peer.message(6, 22, 1, 0, AGGREGATE[:-10]))


def test_aggregates_off_the_publishing_stream_are_not_buffered() -> None:
    server, peer = publishing(collect_media=True)
    big = peer.message(6, 22, 2, 0, AGGREGATE * 100)
    server.feed(big[: len(big) // 2])
    assert server.conn.buffered_bytes() == CONFIG.read_buffer_size  # skipped, not collected
    server.feed(big[len(big) // 2 :])
    assert server.conn.counters.ignored_messages == 1
    assert server.of(MediaReceived) == []


@pytest.mark.parametrize("collect", [False, True], ids=["counting", "collect_media"])
def test_timestamp_jumps_and_regressions_are_counted(collect: bool) -> None:
    """The inline path (counting) and the parsing path (collect_media) agree."""
    server, peer = publishing(collect_media=collect)
    frame, aac = b"\x27\x01\x00\x00\x00" + bytes(20), b"\xaf\x01" + bytes(10)
    steps = [0, 33, 66, 66 + TIMESTAMP_JUMP_MS + 1, 40, 80]  # one jump, one regression
    wire = b"".join(peer.message(6, 9, 1, ts, frame) for ts in steps)
    wire += b"".join(peer.message(4, 8, 1, ts, aac) for ts in (0, 20, 9000))  # one jump
    server.feed(wire)
    counters = server.conn.counters
    assert counters.timestamp_jumps == 2
    assert counters.timestamp_regressions == 1
    assert counters.video_frames == len(steps)
