"""Relaying (issue 12, first step): a real FFmpeg publish to one node, pushed on by it to
a second real stream-sync node through the operator's global push target."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.node import Node
from stream_sync.state.interfaces import PublishEnded, PublishStarted
from tests.integration.conftest import node_settings, publish_test_pattern, running_node
from tests.support import (
    BusRecorder,
    Relay,
    debian_ffmpeg,
    ffmpeg_command,
    free_port,
    require,
    run_process,
    until_ready,
)

pytestmark = pytest.mark.ffmpeg

SECONDS, FPS = 6, 15


async def create(node: Node, name: str) -> service.CreatedChannel:
    async with node.sessions() as session:
        return await service.create_channel(
            session, secrets=node.store.secrets, name=name, actor=Actor.cli()
        )


@contextlib.asynccontextmanager
async def source_node(tmp_path: Path, target: str) -> AsyncIterator[Node]:
    async with running_node(node_settings(tmp_path / "source", push_targets=[target])) as node:
        yield node


async def test_a_live_stream_is_pushed_to_the_target_and_ended_there_cleanly(
    tmp_path: Path,
) -> None:
    async with running_node(node_settings(tmp_path / "target")) as target:
        destination = await create(target, "mirror")
        heard = BusRecorder(target.bus)
        url = f"rtmp://127.0.0.1:{target.rtmp_port}/live/{destination.key}"
        async with source_node(tmp_path, url) as source:
            channel = await create(source, "studio")
            sent = BusRecorder(source.bus)
            await publish_test_pattern(source, channel.key, SECONDS)
            ended_here = await sent.wait_for(PublishEnded)
            started = await heard.wait_for(PublishStarted)
            ended = await heard.wait_for(PublishEnded)
            await sent.close()
        await heard.close()

    assert started.channel_id == destination.channel_id
    assert ended.reason == "client stopped (FCUnpublish)"  # the push said goodbye
    assert (ended.video_codec, ended.audio_codec) == ("avc1", "mp4a")  # as sent, no transcoding
    assert ended_here.video_frames == SECONDS * FPS
    # From the first keyframe on (one a second), everything arrived.
    assert SECONDS * FPS - FPS <= ended.video_frames <= SECONDS * FPS


async def test_a_target_that_is_down_costs_the_ingest_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    port = free_port()  # nothing listens there
    secret = "platform_key_" + "x" * 20
    async with source_node(tmp_path, f"rtmp://127.0.0.1:{port}/live/{secret}") as source:
        channel = await create(source, "studio")
        sent = BusRecorder(source.bus)
        url = f"{source.rtmp_url}/{channel.key}"
        proc = await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=SECONDS))
        await sent.wait_for(PublishStarted)
        [push] = source.ingest.outputs.sinks(channel.channel_id) if source.ingest.outputs else []
        _, stderr = await proc.communicate()
        ended = await sent.wait_for(PublishEnded)
        await sent.close()

    assert proc.returncode == 0, stderr.decode()
    assert ended.video_frames == SECONDS * FPS  # the ingest lost nothing
    assert (push.state, push.reason) == ("retrying", "connection refused")
    assert f"push to rtmp://127.0.0.1:{port}/live failed (connection refused)" in caplog.text
    assert secret not in caplog.text  # the target's key is never logged


async def test_a_target_lost_mid_stream_is_retried_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    seconds = 12
    async with running_node(node_settings(tmp_path / "target")) as target:
        destination = await create(target, "mirror")
        heard = BusRecorder(target.bus)
        async with Relay(target.rtmp_port) as link:
            url = f"rtmp://127.0.0.1:{link.port}/live/{destination.key}"
            async with source_node(tmp_path, url) as source:
                channel = await create(source, "studio")
                sent = BusRecorder(source.bus)
                encoder = await run_process(
                    ffmpeg_command(
                        debian_ffmpeg(), f"{source.rtmp_url}/{channel.key}", seconds=seconds
                    )
                )
                await heard.wait_for(PublishStarted)
                link.cut()  # the target's network goes away
                await heard.wait_for(PublishEnded)
                where = f"push to rtmp://127.0.0.1:{link.port}/live"
                await sent.until(lambda: f"{where} failed" in caplog.text)
                link.restore()
                await heard.until(lambda: len(heard.of(PublishStarted)) == 2)
                _, stderr = await encoder.communicate()
                ended_here = await sent.wait_for(PublishEnded)
                await sent.close()
            await heard.until(lambda: len(heard.of(PublishEnded)) == 2)
        await heard.close()

    assert encoder.returncode == 0, stderr.decode()
    assert ended_here.video_frames == seconds * FPS  # the ingest never noticed
    first, second = heard.of(PublishEnded)
    assert first.reason != "client stopped (FCUnpublish)"  # cut off
    assert second.reason == "client stopped (FCUnpublish)"  # resumed, then ended cleanly
    assert second.video_frames > 0
    assert caplog.text.count(f"{where} live") == 2


NGINX, RTMP_MODULE = "/usr/sbin/nginx", "/usr/lib/nginx/modules/ngx_rtmp_module.so"


def start_nginx(folder: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Debian's nginx-rtmp on a free loopback port, recording every stream (`record all`)."""
    require(Path(NGINX).exists() and Path(RTMP_MODULE).exists(), "nginx with libnginx-mod-rtmp")
    port, recordings = free_port(), folder / "recordings"
    (folder / "logs").mkdir(parents=True)
    recordings.mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = folder / "nginx.conf"
    conf.write_text(
        f"load_module {RTMP_MODULE};\n{user}daemon off;\nmaster_process off;\n"
        f"pid {folder}/nginx.pid;\nerror_log {folder}/logs/error.log;\n"
        "events { worker_connections 64; }\n"
        f"rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{\n"
        f"  live on; record all; record_path {recordings}; record_unique off;\n"
        "} } }\n"
    )
    return subprocess.Popen([NGINX, "-c", str(conf), "-p", str(folder)]), port, recordings


@contextlib.asynccontextmanager
async def nginx_recording(folder: Path) -> AsyncIterator[tuple[int, Path]]:
    nginx, port, recordings = start_nginx(folder)

    async def listening() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    try:
        await until_ready(nginx, listening, 10)
        yield port, recordings
    finally:
        nginx.terminate()  # nginx-rtmp closes its recordings as it stops
        await asyncio.to_thread(nginx.wait, 10)


def probe(path: Path) -> tuple[list[str], float]:
    """Codecs and duration of a recording, as ffprobe reads them."""
    out = subprocess.run(
        [debian_ffmpeg().replace("ffmpeg", "ffprobe"), "-v", "error", "-show_entries",
         "stream=codec_name:format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = json.loads(out.stdout)
    codecs = sorted(stream["codec_name"] for stream in found["streams"])
    return codecs, float(found["format"]["duration"])


async def test_nginx_rtmp_records_what_the_push_sends(tmp_path: Path) -> None:
    async with nginx_recording(tmp_path / "nginx") as (port, recordings):
        url = f"rtmp://127.0.0.1:{port}/live/{{channel}}"
        async with source_node(tmp_path, url) as source:
            channel = await create(source, "studio")
            sent = BusRecorder(source.bus)
            await publish_test_pattern(source, channel.key, SECONDS)
            await sent.wait_for(PublishEnded)
            await sent.close()
        # The source node has stopped: its push said FCUnpublish and hung up.
    recording = recordings / "studio.flv"  # {channel}: the channel's name
    codecs, duration = probe(recording)
    assert codecs == ["aac", "h264"]  # as sent: no transcoding
    assert SECONDS - 1.5 <= duration <= SECONDS + 0.5  # from the first keyframe on
    decode = await run_process(
        [debian_ffmpeg(), "-v", "error", "-xerror", "-i", str(recording), "-f", "null", "-"]
    )
    _, errors = await decode.communicate()
    assert decode.returncode == 0, errors.decode()
