"""Is the load generator a faithful publisher? The sample through FFmpeg and through it.

Starts an embedded stream-sync, publishes the sample FLV once with FFmpeg
(`ffmpeg -re -i sample.flv -c copy -f flv rtmp://...`) and once with the load
generator (one real-time publisher, exactly one pass through the file), then compares
what the server counted for each connection (its `closed` log line): bytes received,
media bytes, video and audio frames, keyframes. Media counts must match exactly;
total bytes differ only by RTMP framing (FFmpeg's own metadata message, command
details, header compression), which the table shows.

    .venv/bin/python -m benchmarks.ffcheck [--write]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from . import flvfile, loadgen
from .publisher import LoadConfig, Mode
from .servers import ServerSet, StreamSync

RESULT = Path(__file__).resolve().parent / "results" / "loadgen_check.md"
FIELDS = ("bytes_in", "media_bytes", "video_frames", "audio_frames", "keyframes")
_CLOSED = re.compile(r"peer=(\S+) closed reason='([^']*)'(.*)$")
_FIELD = re.compile(r"(\w+)=(\d+)")


def server_counts(server: StreamSync) -> list[dict[str, int | str]]:
    """Every `closed` line of the server's log as its numeric fields, in log order."""
    found: list[dict[str, int | str]] = []
    for line in server.log_text().splitlines():
        match = _CLOSED.search(line)
        if match:
            row: dict[str, int | str] = {"reason": match.group(2)}
            row.update({k: int(v) for k, v in _FIELD.findall(match.group(3))})
            found.append(row)
    return found


def file_counts(stream: flvfile.FlvStream) -> dict[str, int | str]:
    video = [t for t in stream.frames if t.type_id == flvfile.TAG_VIDEO]
    return {
        "media_bytes": stream.media_bytes,
        "video_frames": len(video),
        "audio_frames": len(stream.frames) - len(video),
        "keyframes": sum(1 for t in video if t.payload[0] >> 4 == 1),
    }


def wait_for(server: StreamSync, count: int, timeout: float = 15.0) -> list[dict[str, int | str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = server_counts(server)
        if len(rows) >= count:
            return rows
        time.sleep(0.1)
    raise TimeoutError(f"the server logged fewer than {count} closed connections")


def compare() -> tuple[str, bool]:
    sample = flvfile.ensure_sample()
    stream = flvfile.load(sample)
    with ServerSet(["embedded"]) as servers:
        server = servers.servers["embedded"]
        assert isinstance(server, StreamSync)
        server.prepare(2)
        server.start()
        ffmpeg_key, loadgen_key = server.names(2)
        ffmpeg = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i",
                  str(sample), "-c", "copy", "-f", "flv", f"{server.url}/{ffmpeg_key}"]  # fmt: skip
        print("publishing with FFmpeg (real time)...", flush=True)
        subprocess.run(ffmpeg, check=True, timeout=stream.duration_ms / 1000 + 60)
        ffmpeg_row = wait_for(server, 1)[0]
        print("publishing with the load generator (real time)...", flush=True)
        config = LoadConfig(
            host="127.0.0.1",
            port=server.port,
            mode=Mode.REALTIME,
            duration=stream.duration_ms / 1000,  # exactly one pass through the file
            spread=0.0,
            common_end=False,
        )
        load = loadgen.run(config, [loadgen_key], sample=sample)
        loadgen_row = wait_for(server, 2)[1]
        server.stop()
    expected = file_counts(stream)
    rows = [("the file", expected), ("FFmpeg -re -c copy", ffmpeg_row), ("loadgen", loadgen_row)]
    same = all(ffmpeg_row.get(k) == loadgen_row.get(k) == expected[k] for k in expected)
    lines = [
        "# Load generator check: FFmpeg vs loadgen, as counted by stream-sync",
        "",
        f"Sample: `{sample.name}` ({stream.duration_ms} ms). The server's `closed` log "
        "line for each connection; `the file` is what the FLV holds (codec headers "
        "included in media bytes).",
        "",
        "| publisher | " + " | ".join(FIELDS) + " |",
        "|---|" + "---|" * len(FIELDS),
    ]
    for label, row in rows:
        lines.append(f"| {label} | " + " | ".join(str(row.get(k, "-")) for k in FIELDS) + " |")
    offered = load.bytes_offered
    lines += [
        "",
        f"loadgen offered {offered} bytes; the server received {loadgen_row.get('bytes_in')}.",
        f"Media counts identical for FFmpeg, loadgen and the file: {'yes' if same else 'NO'}.",
        "",
    ]
    return "\n".join(lines), same and offered == loadgen_row.get("bytes_in")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ffcheck")
    parser.add_argument("--write", action="store_true", help=f"write {RESULT.name} too")
    args = parser.parse_args(argv)
    text, ok = compare()
    print(text)
    if args.write:
        RESULT.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
