"""Refusals each encoder understands: it gives up (or shows its error) within seconds.

Every attempt goes through a relay that keeps what the server said, so the test sees
that the refusal came as `NetStream.Publish.BadName` and that `NetStream.Publish.Start`
was never sent first (an encoder told "started" and then cut off retries forever).
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream_sync.credentials import service
from stream_sync.node import Node
from stream_sync.rtmp.messages import StatusCode
from stream_sync.state.interfaces import PublishEnded, PublishRefused, PublishStarted
from tests.compat.encoders import ffmpeg, gst_version
from tests.compat.obs import ObsProfile, obs_binaries, obs_version, run_obs
from tests.compat.report import Row
from tests.support import (
    BusRecorder,
    Relay,
    debian_ffmpeg,
    ffmpeg_command,
    gst_command,
    gstreamer,
    run_process,
)

GIVE_UP = 10.0  # seconds a refused client has to exit or show its error
CLIENTS = ["ffmpeg-debian", "ffmpeg-7.0", "ffmpeg-9.0", "rtmpsink", "rtmp2sink", "obs"]


@dataclass
class GaveUp:
    seconds: float
    how: str
    shown: str  # what the user got to read


def description(heard: bytes) -> str:
    """The refusal's description: the AMF0 string under "description", after its code."""
    refusal = heard.index(StatusCode.PUBLISH_BAD_NAME.encode())
    at = heard.index(b"\x00\x0bdescription\x02", refusal) + 14
    length = int.from_bytes(heard[at : at + 2], "big")
    return heard[at + 2 : at + 2 + length].decode()


async def attempt(client: str, server: str, key: str, row: Row, folder: Path) -> GaveUp:
    """Publish with ``client`` to ``server`` (rtmp://host:port/live) until it gives up."""
    began = time.monotonic()
    if client == "obs":
        obs, _ = obs_binaries()
        row.describe("OBS Studio", obs_version(obs), "RTMP", "")
        profile = ObsProfile(server=server, key=key, retry_delay=1)
        async with run_obs(folder, profile) as run:
            await run.wait_for_log(r"Connection to \S+ failed", GIVE_UP)
            seconds = time.monotonic() - began
            said = await run.wait_for_log(r"NetStream\.Publish\.\w+ \((.*)\)\n", 1)
            # Nothing announces a retry that does not come: outlast OBS's retry delay.
            await asyncio.sleep(profile.retry_delay + 1.5)
            assert "Streaming Start" not in run.log()
            assert "Reconnecting" not in run.log()
        return GaveUp(seconds, "error shown", said.group(1))
    if client.startswith("ffmpeg"):
        encoder = ffmpeg(client.removeprefix("ffmpeg-"))
        row.describe(encoder.client, encoder.version, "RTMP", "")
        command = ffmpeg_command(encoder.exe, f"{server}/{key}", seconds=30)
    else:
        exe = gstreamer(client)
        row.describe(f"GStreamer {client}", gst_version(exe), "RTMP", "")
        url = f"{server}/{key}"
        location = f"location={url} live=1" if client == "rtmpsink" else f"location={url}"
        command = gst_command(exe, [client, location], frames=450)
    proc = await run_process(command)
    _, stderr = await asyncio.wait_for(proc.communicate(), GIVE_UP)
    seconds = time.monotonic() - began
    code = proc.returncode
    assert code != 0, stderr.decode()
    # librtmp (rtmpsink) writes on after the close and dies of SIGPIPE: a failure all the same.
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exits with {code}"
    return GaveUp(seconds, how, stderr.decode(errors="replace"))


@pytest.mark.parametrize("scenario", ["wrong key", "key already live"])
@pytest.mark.parametrize("client", CLIENTS)
async def test_refused(
    node: Node,
    channel: service.CreatedChannel,
    bus: BusRecorder,
    row: Row,
    tmp_path: Path,
    client: str,
    scenario: str,
) -> None:
    key, reason, first = channel.key, "already live", None
    if scenario == "wrong key":
        key = channel.key[:-4] + ("BBBB" if key.endswith("AAAA") else "AAAA")
        reason = "Invalid stream key"
    else:  # someone is live on the key already, and must not notice the second encoder
        live = ffmpeg_command(debian_ffmpeg(), f"{node.rtmp_url}/{key}", seconds=60)
        first = await run_process(live)
        await bus.wait_for(PublishStarted)
    try:
        async with Relay(node.rtmp_port) as spy:
            server = f"rtmp://127.0.0.1:{spy.port}/live"
            gave_up = await attempt(client, server, key, row, tmp_path)
        if first is not None:  # the first publisher never noticed
            assert first.returncode is None
            assert not bus.of(PublishEnded)
    finally:
        if first is not None:
            first.kill()
            await first.wait()
    row.codec = scenario
    assert StatusCode.PUBLISH_BAD_NAME.encode() in spy.heard
    assert StatusCode.PUBLISH_START.encode() not in spy.heard
    assert spy.connections == 1  # it did not retry on its own
    if first is None:
        assert not bus.of(PublishStarted)
        refused = await bus.wait_for(PublishRefused)
        assert refused.key_id == channel.key_id
    else:
        assert len(bus.of(PublishStarted)) == 1
    said = description(bytes(spy.heard))
    assert reason in said
    shown = "shows" if said in gave_up.shown else "does not show"
    row.result = f'refused: {gave_up.how} after {gave_up.seconds:.1f} s; {shown} "{said}"'
    if client == "obs" or client.startswith("ffmpeg"):
        assert said in gave_up.shown  # these clients show the server's words
