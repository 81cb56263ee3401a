"""The monitor on real streams: measurements, health, and the status machine end to end.

The streams are pre-encoded files sent with `-re -c copy`, so no encoder runs while
the test measures: what the monitor reports must match what the file contains.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_sync.audit import Actor
from stream_sync.db.models import Role
from stream_sync.node import Node
from stream_sync.state.interfaces import StatusChanged
from tests.support import BusRecorder, debian_ffmpeg, run_process

PASSWORD = "monitor test passphrase"
VIDEO_KBPS = 2500


def encode(path: Path, *, seconds: int, keyframe_every: int, audio: bool) -> Path:
    """1280x720 at 30 fps, CBR video, optionally 128 kbit/s AAC, into an FLV file."""
    args = [
        debian_ffmpeg(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=1280x720:rate=30:duration={seconds}",
    ]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    args += [
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-b:v", f"{VIDEO_KBPS}k", "-minrate", f"{VIDEO_KBPS}k", "-maxrate", f"{VIDEO_KBPS}k",
        "-bufsize", f"{VIDEO_KBPS}k", "-x264-params", "nal-hrd=cbr",
        "-g", str(keyframe_every * 30), "-keyint_min", str(keyframe_every * 30),
        "-sc_threshold", "0",
    ]  # fmt: skip
    args += ["-c:a", "aac", "-b:a", "128k"] if audio else ["-an"]
    subprocess.run([*args, str(path)], check=True, timeout=600)
    return path


def video_kbps(path: Path) -> float:
    """The file's own video bitrate, from its packets (the oracle for the 30 s window)."""
    probe = subprocess.run(
        [debian_ffmpeg().replace("ffmpeg", "ffprobe"), "-v", "error", "-select_streams", "v:0",
         "-show_entries", "packet=size,pts_time", "-of", "csv=p=0", str(path)],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    packets = [line.split(",") for line in probe.stdout.split() if line]
    times = [float(t) for t, _ in packets]
    return sum(int(size) for _, size in packets) * 8 / 1000 / (max(times) - min(times))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("streams")
    return {
        "good": encode(folder / "good.flv", seconds=40, keyframe_every=2, audio=True),
        "bad": encode(folder / "bad.flv", seconds=16, keyframe_every=10, audio=False),
        "short": encode(folder / "short.flv", seconds=60, keyframe_every=2, audio=True),
    }


@pytest.fixture
async def admin(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    await node.control.create_user(
        email="ops@example.com", password=PASSWORD, role=Role.ADMIN, actor=Actor.cli()
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}") as client:
        login = await client.post(
            "/api/auth/login", json={"email": "ops@example.com", "password": PASSWORD}
        )
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        yield client


async def send(node: Node, key: str, path: Path) -> asyncio.subprocess.Process:
    return await run_process(
        [debian_ffmpeg(), "-hide_banner", "-loglevel", "error", "-re", "-i", str(path),
         "-c", "copy", "-f", "flv", f"{node.rtmp_url}/{key}"]
    )  # fmt: skip


async def sample_until(
    client: httpx.AsyncClient, channel: str, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """Sample the channel until done(detail) (measurements are counters read each second)."""
    async with asyncio.timeout(timeout):
        while True:
            detail: dict[str, Any] = (await client.get(f"/api/channels/{channel}")).json()
            if done(detail):
                return detail
            await asyncio.sleep(0.5)


def measured(detail: dict[str, Any]) -> dict[str, Any]:
    stats = detail.get("stats") or {}
    result: dict[str, Any] = stats.get("measurements") or {}
    return result


async def test_a_known_stream_is_measured_as_it_is(
    node: Node, admin: httpx.AsyncClient, files: dict[str, Path]
) -> None:
    created = (await admin.post("/api/channels", json={"name": "known"})).json()
    sender = await send(node, created["stream_key"], files["good"])
    window = await sample_until(
        admin, created["id"], lambda d: measured(d).get("bitrate_30s") is not None, timeout=45
    )
    values = measured(window)
    assert window["status"] == "live"
    assert (values["video"]["width"], values["video"]["height"]) == (1280, 720)
    assert 29 <= values["fps"] <= 31
    assert abs(values["keyframe_interval"] - 2.0) <= 0.1
    expected = video_kbps(files["good"])
    assert abs(values["bitrate_30s"]["video"] - expected) <= 0.10 * expected
    assert window["stats"]["health"]["overall"] in ("good", "ok")
    assert time.time() - window["stats"]["last_update"] < 3
    await asyncio.wait_for(sender.communicate(), 30)
    assert sender.returncode == 0
    after = await sample_until(admin, created["id"], lambda d: d["status"] == "offline", 5)
    assert after["session_id"] is None
    (session,) = (await admin.get(f"/api/channels/{created['id']}/sessions")).json()
    assert session["end_reason"] == "stopped"
    assert (session["width"], session["height"]) == (1280, 720)
    assert session["peak_kbps"] > VIDEO_KBPS * 0.9


async def test_a_bad_stream_gets_the_matching_health_issues(
    node: Node, admin: httpx.AsyncClient, files: dict[str, Path]
) -> None:
    created = (await admin.post("/api/channels", json={"name": "bad"})).json()
    sender = await send(node, created["stream_key"], files["bad"])

    def flagged(detail: dict[str, Any]) -> bool:
        health = (detail.get("stats") or {}).get("health") or {}
        codes = {issue["code"] for issue in health.get("issues", [])}
        return {"keyframe_interval_high", "no_audio"} <= codes

    detail = await sample_until(admin, created["id"], flagged, timeout=20)
    assert detail["stats"]["health"]["overall"] in ("ok", "bad")
    sender.kill()
    await sender.wait()


async def test_kill_reconnect_within_grace_and_stop(
    node: Node, admin: httpx.AsyncClient, files: dict[str, Path]
) -> None:
    bus = BusRecorder(node.bus)
    created = (await admin.post("/api/channels", json={"name": "flaky"})).json()
    await admin.patch(f"/api/channels/{created['id']}", json={"grace_seconds": 4})
    key, channel = created["stream_key"], created["id"]

    first = await send(node, key, files["short"])
    live = await bus.wait_for(StatusChanged, lambda e: e.status == "live")
    os.kill(first.pid, signal.SIGKILL)
    await first.wait()
    waiting = await bus.wait_for(StatusChanged, lambda e: e.status == "reconnecting", timeout=3)
    assert waiting.session_id == live.session_id
    assert (await admin.get(f"/api/channels/{channel}")).json()["status"] == "reconnecting"

    second = await send(node, key, files["short"])  # back within the 4 s grace
    back = await bus.wait_for(
        StatusChanged, lambda e: e.status == "live" and e.seq > waiting.seq, timeout=5
    )
    assert back.session_id == live.session_id  # the same session
    os.kill(second.pid, signal.SIGKILL)
    await second.wait()
    gone = await bus.wait_for(
        StatusChanged, lambda e: e.status == "offline" and e.seq > back.seq, timeout=10
    )
    assert gone.reason == "grace expired"
    assert gone.at - waiting.at >= 4  # offline only once the grace ran out

    third = await send(node, key, files["short"])
    fresh = await bus.wait_for(
        StatusChanged, lambda e: e.status == "live" and e.seq > gone.seq, timeout=5
    )
    assert fresh.session_id != live.session_id  # after grace: a new session
    third.send_signal(signal.SIGINT)  # FFmpeg's normal exit: FCUnpublish + deleteStream
    await third.wait()
    stopped = await bus.wait_for(
        StatusChanged, lambda e: e.status == "offline" and e.seq > fresh.seq, timeout=5
    )
    assert stopped.reason == "stopped"
    sessions = (await admin.get(f"/api/channels/{channel}/sessions")).json()
    assert [s["end_reason"] for s in sessions] == ["stopped", "grace expired"]
    assert sessions[1]["publishes"] == 2
    await bus.close()
