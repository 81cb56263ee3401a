"""Multistreaming (issue 12): a channel's own push targets, real servers on both ends.

A real FFmpeg publishes to stream-sync, which pushes the channel to Debian's
nginx-rtmp (recording every stream) and to a second stream-sync node, both added as
the channel's targets with their keys encrypted in the database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stream_sync.audit import Actor
from stream_sync.ingest.relay import Push
from stream_sync.node import Node
from stream_sync.outputs import targets
from stream_sync.state.interfaces import PublishEnded, PublishStarted, StreamStats
from tests.integration.conftest import node_settings, publish_test_pattern, running_node
from tests.integration.test_relay import create, nginx_recording, probe
from tests.support import (
    BusRecorder,
    Relay,
    debian_ffmpeg,
    ffmpeg_command,
    run_process,
    write_certificate,
)

pytestmark = pytest.mark.ffmpeg

FPS = 15


async def add_target(node: Node, channel_id: int, name: str, url: str, key: str) -> None:
    async with node.sessions() as session:
        await targets.create_target(
            session,
            secrets=node.store.secrets,
            channel_id=channel_id,
            name=name,
            url=url,
            key=key,
            actor=Actor.cli(),
        )


def pushes(node: Node, channel_id: int) -> dict[str, Push]:
    assert node.ingest.outputs is not None
    found = node.ingest.outputs.sinks(channel_id)
    return {push.target.name: push for push in found if isinstance(push, Push)}


def outputs_of(stats: StreamStats) -> dict[str, dict[str, object]]:
    return {str(o["name"]): o for o in stats.outputs if o.get("kind") == "push"}


async def publishing_until(node: Node, key: str, target: str, state: str) -> StreamStats:
    """FFmpeg publishing to ``node`` until the statistics show ``target`` in ``state``."""
    sent = BusRecorder(node.bus)
    encoder = await run_process(
        ffmpeg_command(debian_ffmpeg(), f"{node.rtmp_url}/{key}", seconds=30)
    )
    try:
        return await sent.wait_for(
            StreamStats, lambda s: outputs_of(s).get(target, {}).get("state") == state
        )
    finally:
        encoder.kill()
        await encoder.wait()
        await sent.close()


async def decodes_cleanly(path: Path) -> None:
    decode = await run_process([debian_ffmpeg(), "-v", "error", "-i", str(path), "-f", "null", "-"])
    _, errors = await decode.communicate()
    assert decode.returncode == 0, errors.decode()
    assert not errors.strip(), errors.decode()


async def test_two_targets_and_one_stopped_mid_stream(tmp_path: Path) -> None:
    """Both get the stream; one cut off mid-stream retries and resumes, the other and the
    ingest never notice; the dashboard's statistics show each one's state and rate."""
    seconds = 14
    async with (
        nginx_recording(tmp_path / "nginx") as (nginx_port, recordings),
        running_node(node_settings(tmp_path / "mirror")) as mirror,
    ):
        destination = await create(mirror, "mirror")
        heard = BusRecorder(mirror.bus)
        async with (
            Relay(mirror.rtmp_port) as link,
            running_node(node_settings(tmp_path / "source")) as source,
        ):
            channel = await create(source, "studio")
            await add_target(
                source, channel.channel_id, "nginx", f"rtmp://127.0.0.1:{nginx_port}/live", "cast"
            )
            await add_target(
                source,
                channel.channel_id,
                "mirror",
                f"rtmp://127.0.0.1:{link.port}/live",
                destination.key,
            )
            sent = BusRecorder(source.bus)
            encoder = await run_process(
                ffmpeg_command(debian_ffmpeg(), f"{source.rtmp_url}/{channel.key}", seconds=seconds)
            )
            # Both live, with bytes going out: what the channel page shows.
            both = await sent.wait_for(
                StreamStats,
                lambda s: (
                    all(
                        o["state"] == "live" and float(str(o["kbps"])) > 0
                        for o in outputs_of(s).values()
                    )
                    and len(outputs_of(s)) == 2
                ),
            )
            await heard.wait_for(PublishStarted)
            link.cut()  # the mirror's network goes away mid-stream
            retrying = await sent.wait_for(
                StreamStats, lambda s: outputs_of(s).get("mirror", {}).get("state") == "retrying"
            )
            link.restore()
            await heard.until(lambda: len(heard.of(PublishStarted)) == 2)
            nginx_push = pushes(source, channel.channel_id)["nginx"]
            _, stderr = await encoder.communicate()
            ended_here = await sent.wait_for(PublishEnded)
            await sent.close()
            assert source.ingest.outputs is not None
            out_bytes = source.ingest.outputs.sent_bytes()  # counts toward capacity_mbps
        await heard.until(lambda: len(heard.of(PublishEnded)) == 2)
        await heard.close()

    assert encoder.returncode == 0, stderr.decode()
    assert ended_here.video_frames == seconds * FPS  # the ingest lost nothing
    assert outputs_of(both)["nginx"]["where"] == f"rtmp://127.0.0.1:{nginx_port}/live"
    assert destination.key not in str(both.outputs)  # the mirror's key is not in the stats
    assert outputs_of(retrying)["nginx"]["state"] == "live"  # the other target did not notice
    assert outputs_of(retrying)["mirror"]["reason"]
    assert (nginx_push.connects, nginx_push.dropped) == (1, 0)
    # Two copies went out, the mirror's less what its cut lost.
    assert 1.5 * ended_here.media_bytes <= out_bytes <= 2 * ended_here.media_bytes
    cut, resumed = heard.of(PublishEnded)
    assert cut.reason != "client stopped (FCUnpublish)"
    assert resumed.reason == "client stopped (FCUnpublish)"
    assert resumed.video_frames > 0
    codecs, duration = probe(recordings / "cast.flv")
    assert codecs == ["aac", "h264"]
    assert seconds - 1.5 <= duration <= seconds + 0.5  # one connection, all of it
    await decodes_cleanly(recordings / "cast.flv")


async def test_a_source_killed_and_back_within_grace_keeps_the_targets_connected(
    tmp_path: Path,
) -> None:
    """SIGKILL the encoder, start it again: the platform sees a pause, not a new stream."""
    before, after = 5, 4
    async with (
        nginx_recording(tmp_path / "nginx") as (nginx_port, recordings),
        Relay(nginx_port) as link,  # counts the connections nginx gets
        running_node(node_settings(tmp_path / "source", grace_period=20)) as source,
    ):
        channel = await create(source, "studio")
        url = f"rtmp://127.0.0.1:{link.port}/live"
        await add_target(source, channel.channel_id, "nginx", url, "cast")
        sent = BusRecorder(source.bus)
        ingest_url = f"{source.rtmp_url}/{channel.key}"
        first = await run_process(ffmpeg_command(debian_ffmpeg(), ingest_url, seconds=60))
        await sent.wait_for(
            StreamStats,
            lambda s: (
                s.counters.get("video_frames", 0) >= before * FPS
                and outputs_of(s).get("nginx", {}).get("state") == "live"
            ),
        )
        first.kill()  # SIGKILL: no FCUnpublish, the connection just drops
        await first.wait()
        await sent.wait_for(PublishEnded)
        [push] = pushes(source, channel.channel_id).values()
        second = await run_process(ffmpeg_command(debian_ffmpeg(), ingest_url, seconds=after))
        _, stderr = await second.communicate()
        await sent.until(lambda: len(sent.of(PublishEnded)) == 2)
        await sent.close()
        connections = link.connections
        assert pushes(source, channel.channel_id) == {}  # a clean stop ends them
        await asyncio.wait_for(push.close(), 5)

    assert second.returncode == 0, stderr.decode()
    assert connections == 1  # the same connection to the target all along
    assert push.connects == 1
    codecs, duration = probe(recordings / "cast.flv")
    assert codecs == ["aac", "h264"]
    # Both publishes in one recording, the pause included: timestamps went on.
    assert before + after - 2 <= duration <= before + after + 8
    await decodes_cleanly(recordings / "cast.flv")


async def test_an_rtmps_target_is_pushed_inside_verified_tls(tmp_path: Path) -> None:
    """The target's certificate is checked: trusted through push_ca_file it works; a
    source that does not trust it retries, saying why."""
    cert, key = write_certificate(tmp_path / "tls")
    secure = node_settings(tmp_path / "target", rtmps_port=0, tls_cert=cert, tls_key=key)
    async with running_node(secure) as target:
        destination = await create(target, "mirror")
        heard = BusRecorder(target.bus)
        url = f"rtmps://localhost:{target.rtmps_port}/live"
        trusting = node_settings(tmp_path / "source", push_ca_file=cert)
        async with running_node(trusting) as source:
            channel = await create(source, "studio")
            await add_target(source, channel.channel_id, "secure", url, destination.key)
            sent = BusRecorder(source.bus)
            await publish_test_pattern(source, channel.key, 4)
            await sent.wait_for(PublishEnded)
            await sent.close()
        ended = await heard.wait_for(PublishEnded)
        await heard.close()
        async with running_node(node_settings(tmp_path / "doubting")) as doubting:
            channel = await create(doubting, "studio")
            await add_target(doubting, channel.channel_id, "secure", url, destination.key)
            refused = await publishing_until(doubting, channel.key, "secure", "retrying")

    assert ended.reason == "client stopped (FCUnpublish)"
    assert (ended.video_codec, ended.audio_codec) == ("avc1", "mp4a")
    assert ended.video_frames > 0
    assert outputs_of(refused)["secure"]["where"] == f"rtmps://localhost:{target.rtmps_port}/live"
    assert "CERTIFICATE_VERIFY_FAILED" in str(outputs_of(refused)["secure"]["reason"])


async def test_a_target_that_refuses_the_key_shows_failed_with_its_words(tmp_path: Path) -> None:
    async with running_node(node_settings(tmp_path / "target")) as target:
        await create(target, "mirror")
        url = f"rtmp://127.0.0.1:{target.rtmp_port}/live"
        async with running_node(node_settings(tmp_path / "source")) as source:
            channel = await create(source, "studio")
            wrong = "ssk_" + "x" * 40
            await add_target(source, channel.channel_id, "mirror", url, wrong)
            refused = await publishing_until(source, channel.key, "mirror", "failed")

    mirror = outputs_of(refused)["mirror"]
    assert mirror["reason"] == "NetStream.Publish.BadName"  # what the target said
    assert mirror["kbps"] == 0.0
    assert wrong not in str(refused.outputs)
