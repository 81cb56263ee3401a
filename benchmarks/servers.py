"""The servers under test, each started and stopped by the benchmark in its own temp dir.

- stream-sync "embedded": `stream-sync serve`, SQLite and in-process state, exactly
  what a user runs, logging at the default level (info: a few lines per connection).
- stream-sync "nothumb": "embedded" with live thumbnails off (thumbnail_interval 0),
  to measure what the thumbnails cost at their default settings (issue 11).
- stream-sync "redis": the same with Redis (a fresh key prefix per start, so the key
  cache is cold) and PostgreSQL (a database created for the run and dropped after);
  "redis-nothumb" is that with live thumbnails off.
- nginx-rtmp, the reference: Debian's nginx with libnginx-mod-rtmp, `live on; record
  off`, its RTMP access log on (its default, the counterpart of stream-sync's info
  lines), plus an HTTP listener for `rtmp_stat` so its own byte counters can be read.
- "embedded-push" and "nginx-push" (issue 12): the same two, each pushing every stream
  on to one target (stream-sync: `push_targets` with ``{channel}``; nginx-rtmp: its
  `push` directive). The target is a third process, an nginx-rtmp that takes the
  streams and drops them (`PushSink`), started and stopped with the server under
  test and never measured; its byte count says how much of each push arrived.

A server is restarted for every measurement: Python rarely returns memory to the
system, so only a fresh process gives an honest idle RSS, and the key caches start
cold. Channels (stream-sync) are created once per data folder, before the first start.
Every process started here is stopped in `stop()`, which `ServerSet` calls on any exit.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.node import open_store
from stream_sync.settings import Settings

from . import netstat

REPO = Path(__file__).resolve().parent.parent
STREAM_SYNC = Path(sys.executable).parent / "stream-sync"
NGINX = "/usr/sbin/nginx"
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
SERVERS = (  # every server the benchmark knows, in the order its tables show them
    "embedded",
    "nothumb",
    "redis",
    "redis-nothumb",
    "nginx",
    "embedded-push",
    "nginx-push",
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres@127.0.0.1:5432")
CAPACITY = 100_000  # never the limit being measured
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
PROBLEM = re.compile(r"Traceback|\b(ERROR|CRITICAL|WARNING)\b|refused|\[(error|crit|alert|emerg)\]")
CLOSED = re.compile(r"closed reason='([^']*)'.* bytes_in=(\d+)(?: media_bytes=(\d+))?")


_VARIABLE = re.compile(
    r"\b(conn|peer|channel|key_id|session|token|duration|bytes_in|pid)=\S+|\d+(\.\d+)?s\b"
)


def summarize(lines: list[str], limit: int = 20, ignore: str | None = None) -> list[str]:
    """Problem lines without their timestamp, alike ones counted once: "12x <line>"."""
    counts: dict[str, int] = {}
    for line in lines:
        if not PROBLEM.search(line) or (ignore is not None and ignore in line):
            continue
        text = line.split(" ", 1)[1] if line[:4].isdigit() and " " in line else line
        key = _VARIABLE.sub(lambda m: f"{m.group(1)}=…" if m.group(1) else "…s", text)
        counts[key] = counts.get(key, 0) + 1
    return [f"{count}x {text}" for text, count in list(counts.items())[:limit]]


@dataclass(frozen=True, slots=True)
class Closed:
    """One `closed` line of stream-sync's log: the server's own count for a connection."""

    reason: str
    bytes_in: int
    media_bytes: int | None


@dataclass
class Server:
    """What every server under test offers the runner."""

    name: str  # embedded, redis, nginx
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0
    notes: list[str] = field(default_factory=list)
    sink: PushSink | None = None  # where the push variants send every stream

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"rtmp://{netstat.HOST}:{self.port}/live"

    def prepare(self, publishers: int) -> None:
        """Once, before the first start: channels, databases, configuration."""

    def names(self, count: int) -> list[str]:
        """Stream names to publish to: keys for stream-sync, plain names for nginx."""
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> None:
        if self.sink is not None:
            self.sink.start()
        self.starts += 1
        self.port = netstat.free_port()
        self.log_path = self.workdir / f"{self.name}-{self.starts}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.workdir,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited on start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start in {START_TIMEOUT:g} s")
            time.sleep(0.05)

    def ready(self) -> bool:
        return netstat.port_open(self.port)

    def stop(self) -> None:
        try:
            self._stop_process()
        finally:
            if self.sink is not None:
                self.sink.stop()

    def _stop_process(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self.stop_signal())
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.notes.append(f"{self.name} ignored its stop signal for {STOP_TIMEOUT:g} s")
            proc.kill()
            proc.wait()

    def stop_signal(self) -> int:
        return signal.SIGTERM

    def cleanup(self) -> None:
        """After the last stop: drop databases and key prefixes."""

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def problems(self, limit: int = 20, ignore: str | None = None) -> list[str]:
        """Log lines worth a human's eyes (tracebacks, errors, warnings, refusals), counted."""
        return summarize(self.log_text().splitlines(), limit, ignore)

    def server_bytes(self) -> int | None:
        """The server's own count of bytes received in the last start, if it keeps one."""
        return None


class StreamSync(Server):
    def __init__(self, name: str, workdir: Path, *, redis: bool, thumbnails: bool = True) -> None:
        super().__init__(name, workdir)
        self.redis = redis
        self.thumbnails = thumbnails
        self.data_dir = workdir / "data"
        self.keys: list[str] = []
        self.database = f"ss_bench_{secrets.token_hex(4)}" if redis else ""
        self.prefix = ""
        self.notes.append("log level info (the default)")

    @property
    def database_url(self) -> str | None:
        if not self.redis:
            return None
        return f"postgresql+asyncpg://{POSTGRES}/{self.database}"

    def prepare(self, publishers: int) -> None:
        if self.redis:
            psql("CREATE DATABASE " + self.database)
        self.keys = asyncio.run(create_channels(self.data_dir, self.database_url, publishers))

    def names(self, count: int) -> list[str]:
        if count > len(self.keys):
            raise ValueError(f"{self.name} has {len(self.keys)} channels, {count} asked")
        return self.keys[:count]

    def command(self) -> list[str]:
        return [
            str(STREAM_SYNC),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--rtmp-port",
            str(self.port),
            "--http-port",
            "0",
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_SYNC_")}
        env["STREAM_SYNC_CAPACITY"] = str(CAPACITY)
        env["STREAM_SYNC_HOST"] = netstat.HOST
        # Every publisher of the load comes from one loopback address: the abuse limits
        # per address (issue 9) would refuse it, which is not what is measured here.
        env["STREAM_SYNC_MAX_CONNECTIONS_PER_ADDRESS"] = "1000000"
        env["STREAM_SYNC_FAILED_PUBLISH_LIMIT"] = "100000"  # (d)'s refused warm-ups
        env["STREAM_SYNC_MAX_REFUSAL_DELAY"] = "0"
        if not self.thumbnails:
            env["STREAM_SYNC_THUMBNAIL_INTERVAL"] = "0"
        if self.sink is not None:
            env["STREAM_SYNC_PUSH_TARGETS"] = f"{self.sink.url}/{{channel}}"
        if self.redis:
            self.prefix = f"ssbench{secrets.token_hex(4)}"
            env["STREAM_SYNC_REDIS_URL"] = REDIS_URL
            env["STREAM_SYNC_REDIS_PREFIX"] = self.prefix
            env["STREAM_SYNC_DATABASE_URL"] = self.database_url or ""
        return env

    def ready(self) -> bool:
        # "roles ..." is logged once every role has started, after the RTMP listener. No
        # probe connection: it would be one more "opened ... closed" in the server's log.
        return " roles " in self.log_text()

    def stop(self) -> None:
        super().stop()
        if self.prefix:
            drop_redis_prefix(self.prefix)
            self.prefix = ""

    def cleanup(self) -> None:
        if self.database:
            psql("DROP DATABASE IF EXISTS " + self.database + " WITH (FORCE)")
            self.database = ""

    def closed(self) -> list[Closed]:
        found = []
        for match in CLOSED.finditer(self.log_text()):
            media = match.group(3)
            found.append(Closed(match.group(1), int(match.group(2)), int(media) if media else None))
        return found

    def server_bytes(self) -> int:
        return sum(c.bytes_in for c in self.closed())


async def create_channels(data_dir: Path, database_url: str | None, count: int) -> list[str]:
    """`count` channels with a key each, made the way the CLI makes them, in one process."""
    settings = Settings(data_dir=data_dir, database_url=database_url)
    keys = []
    async with open_store(settings) as store:
        for i in range(count):
            async with store.sessions() as session:
                created = await service.create_channel(
                    session, secrets=store.secrets, name=f"bench{i}", actor=Actor.cli()
                )
            keys.append(created.key)
    return keys


def psql(sql: str) -> None:
    user, _, address = POSTGRES.partition("@")
    host, _, port = address.partition(":")
    subprocess.run(
        ["psql", "-h", host, "-p", port or "5432", "-U", user, "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        capture_output=True,
    )


def drop_redis_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class Nginx(Server):
    def __init__(self, workdir: Path, *, workers: int = 1) -> None:
        super().__init__("nginx", workdir)
        self.workers = self.default_workers = workers  # a scenario may ask for more
        self.stat_port = 0
        self.conf = workdir / "nginx.conf"
        self.notes.append(
            f"nginx-rtmp: master + {workers} worker (b400: 2), RTMP access log on (default)"
        )

    def names(self, count: int) -> list[str]:
        return [f"bench{i}" for i in range(count)]

    def command(self) -> list[str]:
        self.stat_port = netstat.free_port()
        (self.workdir / "logs").mkdir(exist_ok=True)
        push = self.sink.url if self.sink is not None else None
        self.conf.write_text(
            nginx_config(self.port, self.stat_port, self.workdir, self.workers, push=push)
        )
        return [NGINX, "-c", str(self.conf), "-p", str(self.workdir)]

    def ready(self) -> bool:
        return netstat.port_open(self.port) and netstat.port_open(self.stat_port)

    def stop_signal(self) -> int:
        return signal.SIGQUIT  # graceful: workers finish, then the master goes

    def log_text(self) -> str:
        path = self.workdir / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else super().log_text()

    def stat(self) -> ET.Element:
        url = f"http://{netstat.HOST}:{self.stat_port}/stat"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return ET.fromstring(reply.read())

    def server_bytes(self) -> int:
        """nginx-rtmp's global bytes_in: every byte its RTMP connections read since start."""
        return int(self.stat().findtext("bytes_in") or 0)


def nginx_config(
    port: int, stat_port: int, workdir: Path, workers: int, *, push: str | None = None
) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    push_line = f"push {push};" if push else ""
    return f"""load_module {RTMP_MODULE};
{user}worker_processes {workers};
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log;
events {{
    worker_connections 4096;
}}
rtmp {{
    server {{
        listen {netstat.HOST}:{port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
            {push_line}
        }}
    }}
}}
http {{
    access_log off;
    server {{
        listen {netstat.HOST}:{stat_port};
        location /stat {{
            rtmp_stat all;
        }}
    }}
}}
"""


def ensure_nginx() -> None:
    """Install the reference server when it is missing (the suite runs as root)."""
    if Path(NGINX).exists() and Path(RTMP_MODULE).exists():
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "nginx", "libnginx-mod-rtmp"], check=True, env=env
    )
    # Debian starts the packaged nginx on port 80; the benchmark runs its own.
    subprocess.run(["systemctl", "disable", "--now", "nginx"], check=False, capture_output=True)


def nginx_version() -> str:
    out = subprocess.run([NGINX, "-V"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else "?"


class PushSink(Nginx):
    """The push variants' target: nginx-rtmp taking every stream, keeping none of it."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.name = "push-sink"
        self.notes.clear()

    @property
    def url(self) -> str:
        return f"rtmp://{netstat.HOST}:{self.port}/live"

    def start(self) -> None:
        self.workdir.mkdir(mode=0o700, exist_ok=True)
        super().start()


class ServerSet:
    """Every server of a run in one temp dir; all stopped and cleaned up on exit."""

    def __init__(self, names: list[str], *, nginx_workers: int = 1, keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="stream-sync-bench-"))
        self.keep = keep
        self.servers: dict[str, Server] = {}
        for name in names:
            workdir = self.root / name
            workdir.mkdir(mode=0o700)
            server: Server
            if name in ("nginx", "nginx-push"):
                server = Nginx(workdir, workers=nginx_workers)
                server.name = name
            elif name in SERVERS:  # the rest are stream-sync's
                server = StreamSync(
                    name,
                    workdir,
                    redis=name.startswith("redis"),
                    thumbnails=not name.endswith("nothumb"),
                )
            else:
                raise ValueError(f"unknown server {name!r}")
            if name.endswith("-push"):
                server.sink = PushSink(workdir / "sink")
                server.notes.append("every stream pushed to a local nginx-rtmp (not measured)")
            self.servers[name] = server

    def __enter__(self) -> ServerSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in self.servers.values():
            try:
                server.stop()
            finally:
                server.cleanup()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
