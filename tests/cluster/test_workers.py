"""`--workers N`: one server's ingest spread over processes that share its RTMP port.

Real processes throughout: the supervisor and its workers, FFmpeg publishers,
PostgreSQL and the shared Redis. Connections are spread by the kernel (SO_REUSEPORT
hashes each connection's addresses), so tests publish until both workers carry
something rather than assume where a connection lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import ssl
import time
from pathlib import Path

from stream_sync.admin import client as admin
from stream_sync.credentials.service import CreatedChannel
from stream_sync.state.interfaces import (
    PublishEnded,
    PublishRefused,
    PublishStarted,
    StatusChanged,
    StreamStats,
)
from tests.support import (
    RtmpTestClient,
    debian_ffmpeg,
    ffmpeg_command,
    run_process,
    write_certificate,
)

from .harness import CLI, Cluster, WorkerServer

LOCK_TTL = 6.0  # the harness's setting; stale_after is 3 s
WORKERS = {"edge-w1", "edge-w2"}


async def publish(url: str, seconds: float) -> asyncio.subprocess.Process:
    return await run_process(ffmpeg_command(debian_ffmpeg(), url, seconds=seconds))


async def spread(
    cluster: Cluster, server: WorkerServer, at_least: int
) -> tuple[list[CreatedChannel], list[asyncio.subprocess.Process]]:
    """Publish to new channels until there are `at_least` and every worker carries one."""
    channels: list[CreatedChannel] = []
    streams: list[asyncio.subprocess.Process] = []
    carriers: set[str] = set()
    while len(channels) < at_least or carriers != WORKERS:
        assert len(channels) < 16, f"the kernel sent {len(channels)} connections to {carriers}"
        channel = await cluster.channel(f"{server.name}-{len(channels)}")
        channels.append(channel)
        streams.append(await publish(f"{server.rtmp_url}/{channel.key}", 60))
        await server.process.wait_for_log(rf"publish accepted channel={channel.name} ")
        carriers.add(server.worker_of(channel.name))
    assert cluster.bus is not None
    for channel in channels:
        await cluster.bus.wait_for(
            StatusChanged, lambda e, c=channel: e.channel_id == c.channel_id and e.status == "live"
        )
    return channels, streams


async def stop_all(streams: list[asyncio.subprocess.Process]) -> None:
    for stream in streams:
        if stream.returncode is None:
            stream.kill()
        await stream.wait()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_workers_share_the_port_and_one_publisher_per_channel_holds_across_them(
    cluster: Cluster,
) -> None:
    edge = await cluster.start_workers("serve", "edge")
    listening = edge.listening()
    assert sorted(node for node, _ in listening) == sorted(WORKERS)  # once per worker
    assert {url for _, url in listening} == {edge.rtmp_url}  # the port the supervisor chose
    assert re.search(r":\d+/live$", edge.rtmp_url)
    assert cluster.bus is not None

    channels, streams = await spread(cluster, edge, at_least=4)
    assert "publish refused" not in edge.process.log
    assert {e.node for e in cluster.bus.of(PublishStarted)} == WORKERS

    # A second publisher of a live channel is refused by whichever worker it reaches.
    held = channels[0]
    for attempt in range(40):
        client = await RtmpTestClient.open(edge.rtmp_port)
        try:
            await client.connect()
            answer = (await client.publish(held.key))[-1]
        finally:
            client.close()
        assert answer.code == "NetStream.Publish.BadName"
        assert "already live" in answer.info["description"]
        await cluster.bus.wait_for(
            PublishRefused, lambda _, n=attempt: len(cluster.bus.of(PublishRefused)) > n
        )
        if {e.node for e in cluster.bus.of(PublishRefused)} == WORKERS:
            break
    assert {e.node for e in cluster.bus.of(PublishRefused)} == WORKERS
    assert {e.reason for e in cluster.bus.of(PublishRefused)} == {"channel_live"}
    intruder = await publish(f"{edge.rtmp_url}/{held.key}", 1)  # and a real encoder
    _, err = await intruder.communicate()
    assert intruder.returncode != 0
    assert "already live" in err.decode()
    assert not cluster.bus.of(PublishEnded)  # the first publishers never noticed
    assert all(stream.returncode is None for stream in streams)
    await stop_all(streams)


async def test_a_killed_worker_is_restarted_and_its_sibling_streams_on(
    cluster: Cluster,
) -> None:
    edge = await cluster.start_workers("serve", "edge")
    assert cluster.bus is not None
    channels, streams = await spread(cluster, edge, at_least=2)
    lost = channels[0]
    victim = edge.worker_of(lost.name)
    survivors = [
        (channel, stream)
        for channel, stream in zip(channels, streams, strict=True)
        if edge.worker_of(channel.name) != victim
    ]
    pid = edge.pid(victim)
    mark = len(edge.process.lines)

    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    await edge.process.wait_for_log(
        rf"ingest worker {victim} \(pid {pid}\) was killed by SIGKILL after [\d.]+s; "
        r"restarting in [\d.]+s",
        start=mark,
    )
    await edge.process.wait_for_log(rf"ingest worker {victim} is back", start=mark)
    assert edge.listening(mark) == [(victim, edge.rtmp_url)]  # the same port again
    assert edge.pid(victim) != pid

    # The dead worker's channel waits for its owner; its encoder lost the connection.
    waiting = await cluster.bus.wait_for(
        StatusChanged, lambda e: e.channel_id == lost.channel_id and e.status == "reconnecting"
    )
    assert waiting.reason == "node lost"
    await asyncio.wait_for(streams[0].wait(), 10)

    # The other worker's publishers never noticed: still connected, still measured.
    for channel, stream in survivors:
        await cluster.bus.wait_for(
            StreamStats, lambda e, c=channel: e.channel_id == c.channel_id and e.at > killed_at + 1
        )
        assert stream.returncode is None
    assert not cluster.bus.of(PublishEnded)

    # The owner comes back within grace: the same session goes on, on either worker.
    def starts() -> list[PublishStarted]:
        return [e for e in cluster.bus.of(PublishStarted) if e.channel_id == lost.channel_id]

    first = starts()[0]
    while len(starts()) == 1:  # refused while the dead publisher's lease is fresh
        assert time.time() - killed_at < LOCK_TTL + 6, "the dead worker's lease outlived its TTL"
        retry = await publish(f"{edge.rtmp_url}/{lost.key}", 30)
        streams.append(retry)
        accepted = asyncio.ensure_future(
            cluster.bus.wait_for(PublishStarted, lambda _: len(starts()) > 1, timeout=30)
        )
        exited = asyncio.ensure_future(retry.wait())
        await asyncio.wait({accepted, exited}, return_when=asyncio.FIRST_COMPLETED)
        for waiting_task in (accepted, exited):
            waiting_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting_task
    assert starts()[-1].session_id == first.session_id
    await stop_all(streams)


async def test_sigterm_stops_every_worker_gracefully_and_exits_zero(cluster: Cluster) -> None:
    edge = await cluster.start_workers("ingest", "edge")
    assert cluster.bus is not None
    channels, streams = await spread(cluster, edge, at_least=2)
    pids = [edge.pid(worker) for worker in sorted(WORKERS)]

    # Workers get shutdown_grace, then the supervisor kills stragglers 10 s later.
    assert await edge.process.stop(timeout=30) == 0
    assert all(gone(pid) for pid in pids)
    assert "stopping 2 ingest workers" in edge.process.log
    for stream in streams:  # publishers were told
        await asyncio.wait_for(stream.wait(), 30)
    for channel in channels:
        await cluster.bus.wait_for(PublishEnded, lambda e, c=channel: e.channel_id == c.channel_id)
    assert {e.reason for e in cluster.bus.of(PublishEnded)} == {"server shutdown"}
    assert {e.node for e in cluster.bus.of(PublishEnded)} == WORKERS
    assert "restarting" not in edge.process.log
    assert "Traceback" not in edge.process.log


async def test_draining_a_server_drains_every_worker_and_sends_encoders_elsewhere(
    cluster: Cluster,
) -> None:
    edge = await cluster.start_workers("ingest", "edge")
    far = await cluster.start("ingest", "far")
    assert cluster.bus is not None
    channels, streams = await spread(cluster, edge, at_least=2)

    command = [*CLI, "ingest", "drain", "edge", "--deadline", "1"]
    drain = await run_process([*command, "--data-dir", str(cluster.root / "cli")], env=cluster.env)
    _, err = await drain.communicate()
    assert drain.returncode == 0, err.decode()
    for worker in sorted(WORKERS):  # drained by the server's name, every worker
        await edge.process.wait_for_log(rf"\[{worker}\] stream_sync\.ingest: draining: \d+ ")
    for channel in channels:
        closed = await cluster.bus.wait_for(
            PublishEnded, lambda e, c=channel: e.channel_id == c.channel_id, timeout=10
        )
        assert closed.reason == "drained"

    # A newcomer is sent to the other server, never to a sibling worker (same URL).
    newcomer = await cluster.channel("newcomer")
    events = await cluster.try_publish(edge, newcomer.key, properties={"capsEx": 1.0})
    request = next(
        e for e in events if getattr(e, "code", "") == "NetConnection.Connect.ReconnectRequest"
    )
    assert request.info["tcUrl"] == far.rtmp_url
    await stop_all(streams)


async def test_the_supervisor_owns_the_data_folder_and_the_port(cluster: Cluster) -> None:
    edge = await cluster.start_workers("ingest", "edge")
    info = await admin.call(edge.data_dir, "info")
    assert isinstance(info, dict)
    assert info["rtmp_url"] == edge.rtmp_url
    assert info["workers"] == [edge.pid(worker) for worker in sorted(WORKERS)]
    assert info["server_name"] == "edge"

    async def refused(data_dir: str) -> str:
        second = await run_process(
            [*CLI, "ingest", "--workers", "2", "--data-dir", data_dir,
             "--rtmp-port", str(edge.rtmp_port)],
            env=cluster.env,
        )  # fmt: skip
        _, err = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 1
        assert err.decode().count("\n") == 1, err.decode()
        assert "Traceback" not in err.decode()
        return err.decode()

    assert "already running" in await refused(str(edge.data_dir))
    # Another server with workers of its own cannot join the port through SO_REUSEPORT.
    assert "already in use" in await refused(str(cluster.root / "other"))
    assert await edge.process.stop(timeout=30) == 0


async def test_workers_share_the_rtmps_port_and_sighup_renews_every_certificate(
    cluster: Cluster, tmp_path: Path
) -> None:
    cert, key = write_certificate(tmp_path / "tls")
    tls_options = ("--rtmps-port", "0", "--tls-cert", str(cert), "--tls-key", str(key))
    edge = await cluster.start_workers("ingest", "edge", 2, *tls_options)
    shared = await edge.process.wait_for_log(r"2 ingest workers share \S+ and rtmps://[^:]+:(\d+)")
    port = int(shared.group(1))
    for worker in sorted(WORKERS):  # each worker listens on the port the supervisor chose
        await edge.process.wait_for_log(rf"\[{worker}\] .*listening on \S+ and rtmps://\S+:{port}/")

    renewed, renewed_key = write_certificate(tmp_path / "renewed")
    cert.write_bytes(renewed.read_bytes())
    key.write_bytes(renewed_key.read_bytes())
    seen = len(edge.process.lines)
    edge.process.proc.send_signal(signal.SIGHUP)
    for worker in sorted(WORKERS):
        await edge.process.wait_for_log(rf"\[{worker}\] .*TLS certificate reloaded", start=seen)
    context = ssl.create_default_context(cafile=renewed)  # only the renewed one is trusted
    for _ in range(8):  # the kernel spreads connections over both workers
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        writer.close()
        await writer.wait_closed()
    assert edge.process.proc.returncode is None


async def test_a_workers_stream_plays_from_that_worker_through_the_apis_redirect(
    cluster: Cluster,
) -> None:
    edge = await cluster.start_workers("serve", "edge")
    assert cluster.bus is not None
    channel = await cluster.channel("watched")
    stream = await publish(f"{edge.rtmp_url}/{channel.key}", 60)
    try:
        await cluster.bus.wait_for(
            StatusChanged, lambda e: e.channel_id == channel.channel_id and e.status == "live"
        )
        await cluster.bus.wait_for(StreamStats, lambda e: e.channel_id == channel.channel_id)
        worker = edge.worker_of(channel.name)
        playback = await edge.process.wait_for_log(
            rf"\[{re.escape(worker)}\] stream_sync: playback listening on (\S+)"
        )
        client = await cluster.admin_client(edge)
        try:
            redirect = await client.get(f"/api/channels/{channel.name}/preview")
            assert redirect.status_code == 307, redirect.text
            location = redirect.headers["location"]
            assert location.startswith(f"{playback.group(1)}/play/{channel.channel_id}.flv?")
            assert not location.startswith(edge.http_url)  # the worker serves it, not the API
            page = await client.get(f"/channels/{channel.name}")
            assert playback.group(1) in page.headers["content-security-policy"]
            received = b""
            async with client.stream("GET", location) as response:
                assert response.status_code == 200
                assert response.headers["access-control-allow-origin"] == "*"
                async for chunk in response.aiter_bytes():
                    received += chunk
                    if len(received) > 50_000:
                        break
        finally:
            await client.aclose()
        assert received.startswith(b"FLV\x01\x05")  # audio and video
        assert b"onMetaData" in received[:2000]
    finally:
        await stop_all([stream])
