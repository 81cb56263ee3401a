"""The product as an operator uses it: `stream-sync` processes, FFmpeg, signals, logs."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    LoggedProcess,
    debian_ffmpeg,
    ffmpeg_command,
    run_process,
    write_certificate,
)

CLI = [sys.executable, "-m", "stream_sync"]
KEY = re.compile(r"ssk_[0-9A-Za-z]{12}_[0-9A-Za-z]{43}")


async def cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin or b""), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LoggedProcess]:
    data = tmp_path / "data"
    proc = await run_process(
        [*CLI, "serve", "--data-dir", str(data), "--rtmp-port", "0", "--http-port", "0"]
    )
    running = LoggedProcess(proc)
    try:
        running.rtmp_url = (await running.wait_for_log(r"RTMP ingest listening on (\S+)")).group(1)
        running.http_url = (await running.wait_for_log(r"HTTP listening on (\S+)")).group(1)
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_operator_flow_create_publish_reset_shutdown(
    server: LoggedProcess, tmp_path: Path
) -> None:
    data = str(tmp_path / "data")
    code, out, err = await cli(
        "users",
        "create",
        "ops@example.com",
        "--admin",
        "--password-stdin",
        "--data-dir",
        data,
        stdin=b"an operator passphrase\n",
    )
    assert code == 0, err
    code, out, err = await cli("channels", "create", "demo", "--data-dir", data)
    assert code == 0, err
    key = KEY.search(out)
    assert key is not None
    assert f"Server:     {server.rtmp_url}" in out  # the running server's real URL
    key_id = key.group(0)[4:16]

    publisher = await run_process(
        ffmpeg_command(debian_ffmpeg(), f"{server.rtmp_url}/{key.group(0)}", seconds=30)
    )
    await server.wait_for_log(f"publish accepted channel=demo key_id={key_id}")
    await server.wait_for_log("channel=demo status=live")  # live once media flows
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        credentials = {"email": "ops@example.com", "password": "an operator passphrase"}
        assert (await http.post("/api/auth/login", json=credentials)).status_code == 200
        streams = (await http.get("/api/streams")).json()
        assert streams[0]["key_id"] == key_id
        channel = (await http.get("/api/channels")).json()[0]
        assert channel["name"] == "demo"
        assert channel["status"] == "live"
        assert channel["owner_id"] is not None  # the first admin adopted the channel
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).status_code == 200

    code, out, _ = await cli("channels", "list", "--data-dir", data)
    assert code == 0
    assert re.search(rf"^demo\s+ch_\S+\s+{key_id}\s+.*\blive$", out, re.MULTILINE)

    code, out, err = await cli("keys", "reset", "demo", "--data-dir", data)
    assert code == 0, err
    new_key = KEY.search(out)
    assert new_key is not None
    assert new_key.group(0) != key.group(0)
    await asyncio.wait_for(publisher.wait(), 3)
    assert publisher.returncode != 0

    new_key_id = new_key.group(0)[4:16]
    fresh = await run_process(
        ffmpeg_command(debian_ffmpeg(), f"{server.rtmp_url}/{new_key.group(0)}", seconds=30)
    )
    await server.wait_for_log(f"publish accepted channel=demo key_id={new_key_id}")

    assert await server.stop() == 0
    await asyncio.wait_for(fresh.wait(), 5)
    assert "reason='server shutdown'" in server.log
    assert key.group(0) not in server.log
    assert new_key.group(0) not in server.log
    assert f"key_id={key_id}" in server.log
    assert "Traceback" not in server.log


async def test_keys_reset_without_a_running_server_writes_the_database(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert (await cli("channels", "create", "solo", "--data-dir", data))[0] == 0
    code, out, err = await cli("keys", "reset", "solo", "--data-dir", data)
    assert code == 0, err
    assert KEY.search(out)
    code, _, err = await cli("keys", "reset", "nope", "--data-dir", data)
    assert code == 1
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--rtmp-port", "70000"], {}, "invalid --rtmp-port / STREAM_SYNC_RTMP_PORT"),
        ([], {"STREAM_SYNC_HTTP_PORT": "eighty"}, "invalid --http-port / STREAM_SYNC_HTTP_PORT"),
        ([], {"STREAM_SYNC_IDLE_TIMEOUT": "-1"}, "invalid --idle-timeout"),
        (["--public-url", "http://x"], {}, "must look like rtmp://"),
        (["--workers", "2"], {}, "--workers 2 needs the Redis engine"),
        (["--workers", "65"], {}, "invalid --workers / STREAM_SYNC_WORKERS"),
        ([], {"STREAM_SYNC_WORKERS": "3"}, "--workers 3 needs the Redis engine"),
        ([], {"STREAM_SYNC_MAX_CONNECTIONS": "0"}, "invalid --max-connections"),
        ([], {"STREAM_SYNC_PUBLISH_TIMEOUT": "soon"}, "invalid --publish-timeout"),
        ([], {"STREAM_SYNC_API_RATE_LIMIT": "-5"}, "invalid --api-rate-limit"),
    ],
)
async def test_bad_configuration_is_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    environment = {**os.environ, **env}
    environment.pop("STREAM_SYNC_REDIS_URL", None)  # the embedded default: in-process state
    code, _, err = await cli("serve", "--data-dir", str(tmp_path), *args, env=environment)
    assert code == 1
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


async def test_an_unusable_tls_configuration_is_one_line(tmp_path: Path) -> None:
    cert, key = write_certificate(tmp_path / "tls")
    _, other_key = write_certificate(tmp_path / "other")
    serve = ("serve", "--data-dir", str(tmp_path / "data"), "--rtmp-port", "0", "--http-port", "0")
    for args, message in [
        (["--tls-cert", str(cert)], "--tls-cert needs --tls-key / STREAM_SYNC_TLS_KEY"),
        (["--tls-key", str(key)], "--tls-key needs --tls-cert / STREAM_SYNC_TLS_CERT"),
        (
            ["--tls-cert", str(cert), "--tls-key", str(tmp_path / "missing.pem")],
            "cannot serve RTMPS: cannot read",
        ),
        (["--tls-cert", str(cert), "--tls-key", str(other_key)], "cannot serve RTMPS: the cert"),
        (["--tls-cert", str(cert), "--tls-key", str(key), "--rtmps-port", "70000"], "--rtmps-port"),
    ]:
        code, _, err = await cli(*serve, *args)
        assert code == 1, args
        assert message in err, err
        assert err.count("\n") == 1, err
        assert "Traceback" not in err


async def test_sighup_renews_the_rtmps_certificate_of_a_running_server(tmp_path: Path) -> None:
    cert, key = write_certificate(tmp_path / "tls")
    ports = ["--rtmp-port", "0", "--http-port", "0", "--rtmps-port", "0"]
    tls_files = ["--tls-cert", str(cert), "--tls-key", str(key)]
    proc = await run_process([*CLI, "serve", "--data-dir", str(tmp_path / "d"), *ports, *tls_files])
    running = LoggedProcess(proc)
    try:
        found = await running.wait_for_log(r"RTMP ingest listening on \S+ and rtmps://[^:]+:(\d+)")
        port = int(found.group(1))
        renewed, renewed_key = write_certificate(tmp_path / "renewed")
        cert.write_bytes(renewed.read_bytes())
        key.write_bytes(renewed_key.read_bytes())
        seen = len(running.lines)
        proc.send_signal(signal.SIGHUP)
        await running.wait_for_log("TLS certificate reloaded", start=seen)
        context = ssl.create_default_context(cafile=renewed)  # only the renewed one is trusted
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        writer.close()
        await writer.wait_closed()
        assert proc.returncode is None  # SIGHUP did not stop it
    finally:
        proc.terminate()
        await proc.wait()


async def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await cli(
            "serve", "--data-dir", str(tmp_path), "--rtmp-port", str(port), "--http-port", "0"
        )
    assert code == 1
    assert "already in use" in err
    assert "Traceback" not in err


async def test_second_server_on_the_same_data_folder_is_refused(
    server: LoggedProcess, tmp_path: Path
) -> None:
    code, _, err = await cli(
        "serve", "--data-dir", str(tmp_path / "data"), "--rtmp-port", "0", "--http-port", "0"
    )
    assert code == 1
    assert "already running" in err
