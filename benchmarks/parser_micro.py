"""The protocol core alone: CPU per GB and per message for a publish, no sockets.

Isolates what Python costs in the RTMP core (`ServerConnection.buffer_updated` on
64 KiB reads, the way the socket layer feeds it) from the kernel and the event loop,
so a change to the hot path can be judged in seconds. The stream imitates the
issue's load: 30 fps video at 4.5 Mbit/s (keyframes every 2 s, 8x a frame), AAC at
160 kbit/s in 1024-sample frames, at chunk sizes 4096 (OBS, FFmpeg) and 128 (librtmp,
GStreamer).

    .venv/bin/python -m benchmarks.parser_micro [--seconds 60] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from stream_sync.rtmp.client import ClientConnection
from stream_sync.rtmp.config import RtmpConfig
from stream_sync.rtmp.connection import ServerConnection
from stream_sync.rtmp.events import ConnectRequested, PublishRequested

READ = 64 * 1024
VIDEO_KBPS, AUDIO_KBPS, FPS = 4500, 160, 30
AUDIO_FPS = 48000 / 1024


def publishing_pair(chunk_size: int) -> tuple[ClientConnection, ServerConnection]:
    client = ClientConnection(
        app="live", tc_url="rtmp://127.0.0.1/live", now=0.0, chunk_size=chunk_size
    )
    server = ServerConnection(RtmpConfig(), now=0.0)

    def pump() -> list[object]:
        events: list[object] = []
        for _ in range(8):
            events += server.receive_data(client.data_to_send(), 0.0)
            client.receive_data(server.data_to_send())
        return events

    assert any(isinstance(e, ConnectRequested) for e in pump())
    server.accept_connect()
    pump()
    client.publish("ssk_benchmarkkey1_x")
    (request,) = [e for e in pump() if isinstance(e, PublishRequested)]
    server.accept_publish(request.stream_id)
    pump()
    return client, server


def media(client: ClientConnection, seconds: int) -> tuple[bytes, int]:
    """The client's chunked bytes for `seconds` of media, and how many messages."""
    frame = VIDEO_KBPS * 1000 // 8 // FPS
    keyframe = frame * 8
    audio = AUDIO_KBPS * 1000 // 8 // round(AUDIO_FPS)
    client.send_video(0, bytes([0x17, 0, 0, 0, 0]) + bytes(40))  # sequence header
    client.send_audio(0, bytes([0xAF, 0, 0x11, 0x90]))
    messages = 2
    events: list[tuple[float, int]] = [(i / FPS, 9) for i in range(seconds * FPS)]
    events += [(i / AUDIO_FPS, 8) for i in range(int(seconds * AUDIO_FPS))]
    for at, kind in sorted(events):
        ts = int(at * 1000)
        if kind == 9:
            key = round(at * FPS) % (2 * FPS) == 0
            size = keyframe if key else frame
            client.send_video(ts, bytes([0x17 if key else 0x27, 1, 0, 0, 0]) + bytes(size - 5))
        else:
            client.send_audio(ts, bytes([0xAF, 1]) + bytes(audio - 2))
        messages += 1
    return client.data_to_send(), messages


def feed(server: ServerConnection, data: bytes, read: int = READ) -> float:
    """Seconds of CPU to parse data, fed in socket-sized reads."""
    start = time.process_time()
    pos, size = 0, len(data)
    while pos < size:
        target = server.get_buffer()
        n = min(len(target), read, size - pos)
        target[:n] = data[pos : pos + n]
        server.buffer_updated(n, 0.0)
        pos += n
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="stream length per run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--read", type=int, default=READ, help="bytes per read (real-time publishers: ~6000)"
    )
    options = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {options.seconds} s of stream per run")
    for chunk_size in (4096, 128):
        client, server = publishing_pair(chunk_size)
        data, messages = media(client, options.seconds)
        runs = []
        for _ in range(options.repeat):
            client, server = publishing_pair(chunk_size)
            runs.append(feed(server, data, options.read))
            assert server.counters.video_messages + server.counters.audio_messages == messages
        cpu = statistics.median(runs)
        print(
            f"chunk {chunk_size:>5}: {len(data) / 1e6:7.1f} MB, {messages} messages, "
            f"{cpu / (len(data) / 1e9):6.2f} CPU-s/GB, {cpu / messages * 1e6:5.2f} us/message, "
            f"{cpu / (len(data) / options.read) * 1e6:5.2f} us/read, "
            f"{len(data) / cpu / 1e6:7.0f} MB/s (median of {options.repeat})"
        )


if __name__ == "__main__":
    main()
