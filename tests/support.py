"""Helpers shared by the test suites: required tools, event waiting, encoder commands."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import pytest

from stream_sync.state.interfaces import BusEvent, EventBus, PublishEnded, PublishStarted

E = TypeVar("E", bound=BusEvent)
IN_CI = os.environ.get("CI", "").lower() == "true"
# The shared Redis the state tests use, each test under its own key prefix.
REDIS_URL = os.environ.get("STREAM_SYNC_TEST_REDIS", "redis://127.0.0.1:6379/0")


def require(available: bool, what: str) -> None:
    """Skip on a developer's laptop without the tool; fail in CI, where it must exist."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required when CI=true (.ci/run installs it)")
    pytest.skip(f"{what} is not available")


def debian_ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    require(path is not None, "ffmpeg (Debian package ffmpeg)")
    assert path is not None
    return path


def static_ffmpeg() -> str:
    """FFmpeg 7+ from PyPI (imageio-ffmpeg): Debian's 5.1 predates Enhanced RTMP."""
    import imageio_ffmpeg

    path: str = imageio_ffmpeg.get_ffmpeg_exe()
    return path


def gstreamer(element: str) -> str:
    path = shutil.which("gst-launch-1.0")
    inspect = shutil.which("gst-inspect-1.0")
    found = path is not None and inspect is not None
    if inspect is not None and found:
        probe = subprocess.run([inspect, element], capture_output=True, check=False)
        found = probe.returncode == 0
    require(found, f"GStreamer with the {element} element")
    assert path is not None
    return path


def ffmpeg_command(
    exe: str,
    url: str,
    *,
    seconds: float,
    video: tuple[str, ...] = ("-c:v", "libx264", "-preset", "ultrafast", "-g", "15"),
    audio: tuple[str, ...] = ("-c:a", "aac", "-b:a", "64k", "-ac", "1"),
    output: tuple[str, ...] = (),
    realtime: bool = True,
) -> list[str]:
    """320x240 at 15 fps plus a 48 kHz sine, in real time, as the captures were made.

    ``realtime=False`` encodes as fast as it can: a file to replay later.
    """
    pace = ("-re",) if realtime else ()
    return [
        exe,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        *pace,
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=15",
        *pace,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        str(seconds),
        "-pix_fmt",
        "yuv420p",
        *video,
        *audio,
        *output,
        "-f",
        "flv",
        url,
    ]


def probe_file(path: Path) -> tuple[list[str], float]:
    """Codecs and duration of a media file, as ffprobe reads them."""
    import json

    ffprobe = debian_ffmpeg().replace("ffmpeg", "ffprobe")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "stream=codec_name:format=duration",
         "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = json.loads(out.stdout)
    codecs = sorted(stream["codec_name"] for stream in found["streams"])
    return codecs, float(found["format"]["duration"])


def decode_errors(path: Path) -> str:
    """What FFmpeg says decoding the whole file (nothing, for a sound file)."""
    out = subprocess.run(
        [debian_ffmpeg(), "-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stderr if out.returncode == 0 else out.stderr or f"exit status {out.returncode}"


def gst_command(exe: str, sink: list[str], *, frames: int) -> list[str]:
    """The captures' GStreamer pipeline (H.264 Main + AAC through flvmux) into sink."""
    audio_buffers = frames * 48000 // 15 // 1024
    video = (
        f"videotestsrc is-live=true num-buffers={frames} pattern=smpte "
        "! video/x-raw,width=320,height=240,framerate=15/1 "
        "! x264enc bitrate=300 key-int-max=15 speed-preset=ultrafast tune=zerolatency "
        "! video/x-h264,profile=main ! h264parse ! queue ! flvmux name=mux streamable=true !"
    )
    audio = (
        "audiotestsrc is-live=true wave=sine freq=440 samplesperbuffer=1024 "
        f"num-buffers={audio_buffers} ! audio/x-raw,rate=48000,channels=1 ! audioconvert "
        "! avenc_aac bitrate=64000 ! aacparse ! queue ! mux."
    )
    return [exe, "-q", "-e", *video.split(), *sink, *audio.split()]


async def run_process(args: list[str], **kwargs: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        **kwargs,
    )


async def publish_to_end(
    bus: EventBus, command: list[str], timeout: float = 20.0
) -> tuple[PublishStarted, PublishEnded]:
    """Run an encoder to its end (exit status 0); the publish it made, as the bus heard it."""
    recorder = BusRecorder(bus)
    try:
        proc = await run_process(command)
        started = await recorder.wait_for(PublishStarted, timeout=timeout)
        ended = await recorder.wait_for(PublishEnded, timeout=timeout)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        await recorder.close()
    assert proc.returncode == 0, stderr.decode()
    return started, ended


class BusRecorder:
    """Records every bus event and lets a test await the one it expects."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[BusEvent] = []
        self._changed = asyncio.Condition()
        self._subscription = bus.subscribe(stats=True)
        self._task = asyncio.get_running_loop().create_task(self._record())

    async def _record(self) -> None:
        async for event in self._subscription:
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def wait_for(
        self, kind: type[E], predicate: Callable[[E], bool] = lambda _: True, timeout: float = 15
    ) -> E:
        def find() -> E | None:
            for event in self.events:
                if isinstance(event, kind) and predicate(event):
                    return event
            return None

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: find() is not None)
        found = find()
        assert found is not None
        return found

    async def until(self, condition: Callable[[], bool], timeout: float = 15) -> None:
        """Return once condition() holds over the events recorded so far."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(condition)

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    async def close(self) -> None:
        self._task.cancel()
        self._subscription.close()


class ManualClock:
    """A clock that moves only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RtmpTestClient:
    """stream-sync's own sans-IO client over a real socket, for precise misbehaviour."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from stream_sync.rtmp.client import ClientConnection

        self.reader = reader
        self.writer = writer
        self.conn: ClientConnection | None = None

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> RtmpTestClient:
        """Connect from `source`: any 127.0.0.0/8 address, so limits see another client."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    async def connect(
        self, app: str = "live", properties: dict[str, Any] | None = None
    ) -> list[Any]:
        """Handshake and connect; returns the client events up to the connect answer."""
        from stream_sync.rtmp.client import ClientConnection, Connected, ConnectRefused

        loop = asyncio.get_running_loop()
        self.conn = ClientConnection(
            app=app,
            tc_url=f"rtmp://127.0.0.1/{app}",
            now=loop.time(),
            connect_properties=properties,
        )
        answered = (Connected, ConnectRefused)
        return await self.exchange(lambda events: any(isinstance(e, answered) for e in events))

    async def exchange(self, done: Callable[[list[Any]], bool], timeout: float = 5) -> list[Any]:
        assert self.conn is not None
        events: list[Any] = []
        async with asyncio.timeout(timeout):
            while True:
                self.writer.write(self.conn.data_to_send())
                await self.writer.drain()
                if done(events):
                    return events
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                events += self.conn.receive_data(data)

    async def publish(self, key: str) -> list[Any]:
        """Ask to publish; returns the events up to Publish.Start or the first status."""
        from stream_sync.rtmp.client import PublishStarted, StatusReceived

        assert self.conn is not None
        self.conn.publish(key)
        answered = (PublishStarted, StatusReceived)
        return await self.exchange(lambda events: any(isinstance(e, answered) for e in events))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_closed(self, timeout: float) -> None:
        """Return once the server has closed the connection (EOF or reset)."""
        async with asyncio.timeout(timeout):
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionError:
                pass

    def close(self) -> None:
        self.writer.close()


class Relay:
    """A loopback TCP relay in front of ``target_port`` that the test controls.

    It keeps everything the server sent (``heard``, all connections in order) and counts
    connections; `cut` drops every link and refuses new ones until `restore`. Use it as
    an async context manager: ``port`` is set on entry.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.heard = bytearray()
        self.connections = 0
        self.open = True
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._links |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, keep=False), self._pump(up_reader, writer, keep=True)
            )
        finally:
            self._links -= {writer, up_writer}

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, keep: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if keep:
                    self.heard += data
                sink.write(data)
                await sink.drain()
        sink.close()

    def cut(self) -> None:
        self.open = False
        for link in self._links:
            link.transport.abort()

    def restore(self) -> None:
        self.open = True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def until_ready(
    process: subprocess.Popen[bytes] | None, probe: Callable[[], Awaitable[bool]], timeout: float
) -> None:
    """Poll a server that announces nothing until `probe` succeeds; fail if it exits."""
    async with asyncio.timeout(timeout):
        while True:
            assert process is not None, "not started"
            assert process.poll() is None, f"{process.args[0]} exited"
            if await probe():
                return
            await asyncio.sleep(0.02)


class _PrivateServer:
    """A server a test owns: started in a session of its own, probed until it answers,
    killed (with its children) whatever happens when used as a context manager."""

    _process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.kill()

    @property
    def running(self) -> bool:
        return self._process is not None

    async def wait_ready(self, timeout: float = 30) -> None:
        """Poll until the server answers a real request, not merely accepts."""
        await until_ready(self._process, self._answers, timeout)

    async def _answers(self) -> bool:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL to the server and its children, as when the machine dies."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=10)
        self._process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, like a hung server."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGCONT)


class RedisServer(_PrivateServer):
    """A private redis-server on a free port that keeps nothing on disk.

    For tests that stop, pause or restart Redis; the shared one must stay up.
    """

    def __init__(self, directory: Path) -> None:
        exe = shutil.which("redis-server")
        require(exe is not None, "redis-server (Debian package redis-server)")
        assert exe is not None
        self._exe = exe
        self._directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port) the server; see wait_ready."""
        assert self._process is None, "already running"
        self._process = subprocess.Popen(
            [
                self._exe,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self._directory),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            return await reader.readline() == b"+PONG\r\n"
        finally:
            writer.close()


def _postgres_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/<v>/bin)."""
    found = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/postgres")
        if path.parent.joinpath("initdb").exists()
    ]
    found.sort(key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0)
    return found[-1] if found else None


class PostgresServer(_PrivateServer):
    """A private PostgreSQL cluster on a free port (trust auth) that a test may stop or kill.

    The shared server must stay up for the rest of the suite; this one is initdb'd into
    a folder made for it under /tmp. PostgreSQL refuses to run as root, so as root
    its commands run as the postgres user, in a folder of theirs (pytest's temporary
    folders are private to root). Not through `runuser`: it stays the parent and turns
    every signal into SIGTERM, then SIGKILL, so a test could not choose between a fast
    shutdown and a crash; the child switches user itself (`Popen(user=...)`), and the
    server's pid is the postmaster's. Durability is off: a test server that crashes
    loses nothing a test needs. Use it as a context manager so the server is killed
    and its folder removed whatever happens.
    """

    def __init__(self) -> None:
        binaries = _postgres_binaries()
        user = None
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                user = pwd.getpwnam("postgres")
        usable = binaries is not None and (os.geteuid() != 0 or user is not None)
        require(usable, "PostgreSQL server binaries (Debian package postgresql; a postgres user)")
        assert binaries is not None
        self._binaries = binaries
        self._user = user
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._folder: Path | None = None

    def __enter__(self) -> Self:
        folder = Path(tempfile.mkdtemp(prefix="stream-sync-postgres-", dir="/tmp"))
        self._folder = folder
        try:
            if self._user is not None:
                os.chown(folder, self._user.pw_uid, self._user.pw_gid)
            subprocess.run(
                [
                    str(self._binaries / "initdb"),
                    "--pgdata", str(folder / "data"),
                    "--username", "postgres",
                    "--auth", "trust",
                    "--encoding", "UTF8",
                    "--locale", "C",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                timeout=120,
                cwd=folder,
                **self._as_postgres(),
            )  # fmt: skip
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self

    def close(self) -> None:
        super().close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _as_postgres(self) -> dict[str, Any]:
        """Popen arguments that run a command as the postgres user when we are root."""
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def start(self) -> None:
        """Start (or restart, on the same port and data) the server; see wait_ready."""
        assert self._folder is not None, "use PostgresServer as a context manager"
        assert self._process is None, "already running"
        with (self._folder / "postgres.log").open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(self._binaries / "postgres"),
                    "-D", str(self._folder / "data"),
                    "-p", str(self.port),
                    "-k", str(self._folder),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", "max_connections=200",
                    "-c", "fsync=off",
                    "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # kill() reaches the backends as well
                cwd=self._folder,
                **self._as_postgres(),
            )  # fmt: skip

    async def _answers(self) -> bool:
        """A query, not a connection: PostgreSQL answers "starting up" first."""
        import asyncpg

        try:
            connection = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user="postgres", timeout=2
            )
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        try:
            await connection.execute("SELECT 1")
            return True
        finally:
            await connection.close()

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT): sessions are cut, the server exits cleanly."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGINT)
        self._process.wait(timeout=timeout)
        self._process = None

    def log(self) -> str:
        assert self._folder is not None
        return (self._folder / "postgres.log").read_text(errors="replace")


class LoggedProcess:
    """A `stream-sync` child process; its log lines are the events a test can await."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.rtmp_url = ""
        self.http_url = ""
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            async with self._changed:
                self.lines.append(line.decode())
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_log(
        self, pattern: str, start: int = 0, timeout: float = 20
    ) -> re.Match[str]:
        """The first log line from index start on that matches pattern."""
        regex = re.compile(pattern)

        def find() -> re.Match[str] | None:
            for line in self.lines[start:]:
                if match := regex.search(line):
                    return match
            return None

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: find() is not None or self._reader.done())
        found = find()
        if found is None:
            raise AssertionError(f"server exited without logging {pattern!r}:\n{self.log}")
        return found

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def stop(self, timeout: float = 10) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return code

    async def kill(self) -> None:
        """SIGKILL: the process dies without a word, as when a machine fails."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await self._reader


def write_certificate(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for DNS:``name`` (and 127.0.0.1), as PEM files.

    OBS's TLS library matches only DNS names, so test URLs say localhost.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
