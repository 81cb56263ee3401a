"""One settings object for every role, from command-line options and STREAM_SYNC_* variables.

Command-line options win over environment variables, which win over defaults. A bad
value becomes a `SettingsError` whose message is one line naming the option, the
variable and the problem, so the CLI never shows a validation traceback.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .ingest.guard import GuardLimits
from .monitor.health import HealthThresholds
from .outputs.destinations import PushTarget
from .rtmp.config import RtmpConfig
from .webhooks.policy import RetryPolicy, SenderLimits

ENV_PREFIX = "STREAM_SYNC_"
MAX_WORKERS = 64


# Settings whose values may carry credentials: an error about them never repeats them.
HIDDEN_VALUES = frozenset({"push_targets"})


class SettingsError(Exception):
    """A configuration value is unusable; the message is one line for the operator."""


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("stream-sync", appauthor=False))


def _default_server_name() -> str:
    """This machine's name, made to fit the server-name pattern."""
    name = re.sub(r"[^a-z0-9_.-]", "-", socket.gethostname().lower()).strip("-.") or "node"
    return name[:64] if name[0].isalnum() else f"n{name[:63]}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    rtmp_port: int = Field(1935, ge=0, le=65535)
    # RTMPS (RTMP in TLS) listens on rtmps_port when both files are given.
    tls_cert: Path | None = None  # PEM: the certificate, then its chain
    tls_key: Path | None = None  # PEM, unencrypted
    rtmps_port: int = Field(1936, ge=0, le=65535)
    http_port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None
    rtmp_app: str = Field("live", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    database_url: str | None = None

    # RTMP limits (see rtmp.config.RtmpConfig for what each one guards).
    handshake_timeout: float = Field(5.0, gt=0, le=300)
    idle_timeout: float = Field(30.0, gt=0, le=3600)
    publish_timeout: float = Field(15.0, gt=0, le=3600)  # from TCP accept to publish
    admission_timeout: float = Field(5.0, gt=0, le=60)
    max_message_size: int = Field(8 * 1024 * 1024, ge=64 * 1024, le=0xFFFFFF)
    max_control_size: int = Field(64 * 1024, ge=4 * 1024, le=1024 * 1024)
    max_chunk_streams: int = Field(64, ge=4, le=65599)
    min_chunk_size: int = Field(128, ge=128, le=65536)
    max_chunk_size: int = Field(65536, ge=128, le=0x7FFFFFFF)
    out_chunk_size: int = Field(4096, ge=128, le=65536)
    read_buffer_size: int = Field(64 * 1024, ge=4096, le=16 * 1024 * 1024)
    # Seconds between reads of a live stream: flowing publishers are read on a timer
    # (ingest/polling.py), the others in batches of this much (Linux SO_RCVLOWAT,
    # ingest/batching.py); fewer reads and wake-ups, the same bytes. 0 reads at once.
    read_batch: float = Field(0.1, ge=0, le=1)
    shutdown_grace: float = Field(2.0, ge=0, le=60)

    # Abuse limits on the RTMP port, per ingest process (see ingest/guard.py).
    max_connections: int = Field(10_000, ge=1, le=1_000_000)
    max_connections_per_address: int = Field(32, ge=1, le=1_000_000)  # IPv6: per /64
    failed_publish_limit: int = Field(10, ge=1, le=100_000)  # per address: then blocked
    failed_key_limit: int = Field(20, ge=1, le=100_000)  # per key id: wrong secrets slowed
    failure_window: float = Field(60.0, gt=0, le=86_400)  # seconds the two counts cover
    block_duration: float = Field(300.0, ge=0, le=86_400)
    max_refusal_delay: float = Field(5.0, ge=0, le=60)  # a retrying encoder waits this long
    # Ingest worker processes sharing the RTMP port; None: see worker_count().
    workers: int | None = Field(None, ge=1, le=MAX_WORKERS)

    # Control plane.
    server_name: str = Field(
        default_factory=_default_server_name,
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
    )
    # Addresses or networks whose X-Forwarded-For is believed; comma-separated.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cookie_secure: bool | None = None  # None: Secure when the public URL is https/rtmps
    session_ttl_hours: float = Field(24 * 7, gt=0, le=24 * 90)
    key_rotation_overlap: float = Field(600, ge=0, le=7 * 24 * 3600)  # seconds
    audit_retention_days: int = Field(365, ge=0, le=36500)  # 0 keeps forever
    session_retention_days: int = Field(90, ge=0, le=36500)
    max_request_size: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # HTTP requests per client address and second, after a burst (api/ratelimit.py); 0: off.
    api_rate_limit: float = Field(50.0, ge=0, le=1_000_000)
    api_burst: int = Field(200, ge=1, le=1_000_000)

    # Cluster: state shared by several nodes (Redis), capacity, the one-publisher rule.
    redis_url: str | None = None
    redis_prefix: str = Field("ss", pattern=r"^[A-Za-z0-9:_.-]{1,64}$")
    capacity: int = Field(1000, ge=0, le=100_000)  # publishers on this node
    capacity_mbps: float = Field(0, ge=0, le=1_000_000)  # 0: no bandwidth limit
    enforce_mapping: bool = False  # refuse channels mapped to another ingest server
    takeover_policy: Literal["takeover-if-stale", "reject", "takeover"] = "takeover-if-stale"
    stale_after: float = Field(3.0, gt=0, le=300)  # seconds without media: a dead publisher
    lock_ttl: float = Field(10.0, ge=1, le=600)  # a dead node's locks expire after this
    heartbeat_interval: float = Field(2.0, gt=0, le=60)
    key_cache_fresh: float = Field(30.0, ge=0, le=3600)
    key_cache_negative: float = Field(30.0, ge=0, le=3600)
    drain_deadline: float = Field(600.0, ge=0, le=86_400)
    outbox_retention_days: int = Field(7, ge=0, le=36500)

    # Monitor: status and health.
    grace_period: float = Field(30.0, ge=0, le=3600)  # reconnect into the same session
    max_keyframe_interval: float = Field(4.0, gt=0, le=60)
    max_fps_spread: float = Field(0.2, gt=0, le=1)  # (max - min) / max of 1 s frame rates
    no_audio_after: float = Field(5.0, ge=0, le=3600)  # 0: audio is optional
    no_video_after: float = Field(5.0, ge=0, le=3600)  # 0: video is optional
    falling_behind_drift: float = Field(2.0, gt=0, le=600)  # seconds behind real time
    allowed_video_codecs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_audio_codecs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Seconds a stream's new overall health must hold before it is announced
    # (stream.health_changed): a stream at a threshold must not flap.
    health_change_after: float = Field(10.0, ge=0, le=3600)

    # Relay (ingest/relay.py): every live stream is pushed to each of these
    # rtmp[s]://host[:port]/app/stream URLs ({channel} in the stream name: the
    # channel's), beside the channel's own targets. RTMPS targets are checked against
    # the system's CAs, and push_ca_file's too (a private origin).
    push_targets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    push_ca_file: Path | None = None

    # Recording (ingest/recording.py): channels with the record switch on are written
    # to FLV files under recordings_dir (default: <data_dir>/recordings), one file per
    # session, a new part past either limit; each ingest node deletes its own files
    # older than recording_retention_days (0 keeps them).
    recordings_dir: Path | None = None
    recording_max_bytes: int = Field(4 * 1024**3, ge=1024**2, le=1024**4)
    recording_max_seconds: float = Field(6 * 3600.0, ge=10, le=7 * 86_400)
    recording_retention_days: int = Field(30, ge=0, le=36500)

    # Playback preview (ingest/playback.py): an ingest process without the API role
    # (a worker, `stream-sync ingest`) serves its streams on this port; worker i on
    # the port + i. 0: any free port, announced in the node registry.
    playback_port: int = Field(0, ge=0, le=65535)

    # Live thumbnails (ingest/thumbnails.py): one keyframe of each live stream decoded
    # every thumbnail_interval seconds (0: never), every thumbnail_watched_interval
    # while a dashboard shows the channel; thumbnail_width pixels wide.
    thumbnail_interval: float = Field(30.0, ge=0, le=3600)
    thumbnail_watched_interval: float = Field(5.0, ge=1, le=3600)
    thumbnail_width: int = Field(320, ge=32, le=1920)
    # Pictures take at most this share of the CPU the rest of the process uses (or
    # 0.2 % of a core); past it they come less often, watched channels first.
    thumbnail_cpu_share: float = Field(0.06, gt=0, le=100)

    # Webhooks (stream_sync/webhooks/): retries from webhook_retry_first seconds,
    # doubling to webhook_retry_max, until webhook_retry_for after the event.
    webhook_timeout: float = Field(10.0, gt=0, le=120)  # one attempt, connecting included
    webhook_retry_first: float = Field(10.0, gt=0, le=86_400)
    webhook_retry_max: float = Field(3600.0, gt=0, le=86_400)
    webhook_retry_for: float = Field(86_400.0, gt=0, le=30 * 86_400)
    webhook_concurrency: int = Field(32, ge=1, le=1000)  # attempts in flight in all
    webhook_endpoint_concurrency: int = Field(4, ge=1, le=1000)  # of those, per endpoint
    webhook_retention_days: int = Field(30, ge=0, le=36500)  # the delivery log; 0 keeps

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError("must be a host name or an IP address")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: object) -> list[str]:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise ValueError("must be a comma-separated list of addresses or networks")
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not an IP address or network") from None
        return value

    @field_validator("push_targets", mode="before")
    @classmethod
    def _push_targets(cls, value: object) -> list[str]:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a comma-separated list of rtmp:// URLs")
        for url in value:
            PushTarget.parse(url)  # InvalidTarget is a ValueError: says what, not the key
        return value

    def recordings_path(self) -> Path:
        """Where this node's recordings go: ``recordings_dir``, or the data folder's."""
        return self.recordings_dir or self.data_dir / "recordings"

    def push_target_list(self) -> list[PushTarget]:
        return [PushTarget.parse(url) for url in self.push_targets]

    def push_tls(self) -> ssl.SSLContext:
        """The client context of RTMPS pushes: certificates and host names checked."""
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.push_ca_file is not None:
            context.load_verify_locations(cafile=self.push_ca_file)  # checked when loaded
        return context

    @field_validator("push_ca_file")
    @classmethod
    def _push_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                ssl.create_default_context().load_verify_locations(cafile=value)
            except (OSError, ssl.SSLError):
                raise ValueError("must be a readable PEM file of CA certificates") from None
        return value

    @field_validator("allowed_video_codecs", "allowed_audio_codecs", mode="before")
    @classmethod
    def _codec_list(cls, value: object) -> list[str]:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [str(part) for part in value]
        raise ValueError("must be a comma-separated list of FourCCs, e.g. avc1,hvc1")

    def health_thresholds(self) -> HealthThresholds:
        defaults = HealthThresholds()
        return dataclasses.replace(
            defaults,
            max_keyframe_interval=self.max_keyframe_interval,
            max_fps_spread=self.max_fps_spread,
            no_audio_after=self.no_audio_after or None,
            no_video_after=self.no_video_after or None,
            falling_behind_drift=self.falling_behind_drift,
            allowed_video_codecs=frozenset(self.allowed_video_codecs)
            or defaults.allowed_video_codecs,
            allowed_audio_codecs=frozenset(self.allowed_audio_codecs)
            or defaults.allowed_audio_codecs,
        )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must look like redis://host:6379/0")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("rtmp", "rtmps") or not parts.hostname:
            raise ValueError("must look like rtmp://ingest.example.com/live")
        return value.rstrip("/")

    def rtmp_config(self) -> RtmpConfig:
        if self.min_chunk_size > self.max_chunk_size:
            raise SettingsError("min_chunk_size is larger than max_chunk_size")
        return RtmpConfig(
            read_buffer_size=self.read_buffer_size,
            max_message_size=self.max_message_size,
            max_control_size=self.max_control_size,
            max_chunk_streams=self.max_chunk_streams,
            min_chunk_size=self.min_chunk_size,
            max_chunk_size=self.max_chunk_size,
            out_chunk_size=self.out_chunk_size,
            handshake_timeout=self.handshake_timeout,
            idle_timeout=self.idle_timeout,
            publish_timeout=self.publish_timeout,
        )

    def webhook_policy(self) -> RetryPolicy:
        """The retry policy; a combination that makes no sense is one line for the operator."""
        if self.webhook_retry_first > self.webhook_retry_max:
            raise SettingsError(
                "--webhook-retry-first / STREAM_SYNC_WEBHOOK_RETRY_FIRST "
                f"({self.webhook_retry_first:g} s) is longer than --webhook-retry-max / "
                f"STREAM_SYNC_WEBHOOK_RETRY_MAX ({self.webhook_retry_max:g} s)"
            )
        return RetryPolicy(
            first=self.webhook_retry_first,
            cap=self.webhook_retry_max,
            give_up_after=self.webhook_retry_for,
        )

    def webhook_limits(self) -> SenderLimits:
        if self.webhook_endpoint_concurrency > self.webhook_concurrency:
            raise SettingsError(
                "--webhook-endpoint-concurrency / STREAM_SYNC_WEBHOOK_ENDPOINT_CONCURRENCY "
                f"({self.webhook_endpoint_concurrency}) is more than --webhook-concurrency / "
                f"STREAM_SYNC_WEBHOOK_CONCURRENCY ({self.webhook_concurrency})"
            )
        return SenderLimits(
            timeout=self.webhook_timeout,
            total=self.webhook_concurrency,
            per_endpoint=self.webhook_endpoint_concurrency,
        )

    def guard_limits(self) -> GuardLimits:
        return GuardLimits(
            max_connections=self.max_connections,
            max_connections_per_address=self.max_connections_per_address,
            failed_publishes=self.failed_publish_limit,
            failed_per_key=self.failed_key_limit,
            failure_window=self.failure_window,
            block_for=self.block_duration,
            max_refusal_delay=self.max_refusal_delay,
        )

    def tls_files(self) -> tuple[Path, Path] | None:
        """The certificate and key, when both are given: RTMPS and HTTPS are on."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        return self.tls_cert, self.tls_key

    @property
    def tls(self) -> bool:
        """Whether RTMPS is on (checked by `check_tls`)."""
        return self.tls_files() is not None

    def check_tls(self) -> None:
        """Both TLS files or neither: one of them alone is a typo, not a choice."""
        if self.tls_cert is not None and self.tls_key is None:
            given, missing = "--tls-cert", "--tls-key / STREAM_SYNC_TLS_KEY"
        elif self.tls_key is not None and self.tls_cert is None:
            given, missing = "--tls-key", "--tls-cert / STREAM_SYNC_TLS_CERT"
        else:
            return
        raise SettingsError(
            f"{given} needs {missing} to serve RTMPS: give both, or neither for RTMP alone"
        )

    def worker_count(self) -> int:
        """How many ingest worker processes to run.

        Workers share locks, the key cache and events through the state layer, so
        only the Redis engine can serve more than one: without it the default is one
        and asking for more is refused. With Redis the default is one per core this
        process may run on.
        """
        if self.redis_url is None:
            if self.workers is not None and self.workers > 1:
                raise SettingsError(
                    f"--workers {self.workers} needs the Redis engine (workers share locks, "
                    "keys and events through it): set STREAM_SYNC_REDIS_URL, or use --workers 1"
                )
            return 1
        if self.workers is not None:
            return self.workers
        return min(available_cores(), MAX_WORKERS)

    def public_rtmp_url(self, bound_port: int | None = None) -> str:
        """The server URL an encoder is given (OBS's "Server" field)."""
        if self.public_url:
            return self.public_url
        port = self.rtmp_port if bound_port is None else bound_port
        return f"rtmp://{url_host(self.host)}{'' if port == 1935 else f':{port}'}/{self.rtmp_app}"

    def public_http_url(self, bound_port: int, *, secure: bool) -> str:
        """How a browser reaches an HTTP port of this node: the public URL's host, if any."""
        host = urlsplit(self.public_url).hostname if self.public_url else None
        scheme = "https" if secure else "http"
        return f"{scheme}://{url_host(host or self.host)}:{bound_port}"

    def public_rtmps_url(self, bound_port: int | None = None) -> str | None:
        """The RTMPS server URL, when RTMPS is on.

        From an rtmps:// public URL as given; from an rtmp:// one, its host on the
        RTMPS port. Encoders check the certificate against the host name (OBS only
        against DNS names), so a name is better than an address here.
        """
        if not self.tls:
            return None
        port = self.rtmps_port if bound_port is None else bound_port
        suffix = "" if port == 443 else f":{port}"
        if self.public_url:
            parts = urlsplit(self.public_url)
            if parts.scheme == "rtmps":
                return self.public_url
            host = parts.hostname or url_host(self.host)
            host = f"[{host}]" if ":" in host else host
            return f"rtmps://{host}{suffix}{parts.path}"
        return f"rtmps://{url_host(self.host)}{suffix}/{self.rtmp_app}"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a cgroup)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def url_host(host: str) -> str:
    """The host as a URL carries it: a name, an IPv4 address, or an [IPv6] one."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        return "localhost"  # listening everywhere; the operator sets --public-url for others
    return f"[{host}]" if address.version == 6 else host


def load_settings(**overrides: Any) -> Settings:
    """Build settings from options (None means "not given") over the environment."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "settings"
        option = "--" + name.replace("_", "-")
        variable = ENV_PREFIX + name.upper()
        value = error.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
        if name in HIDDEN_VALUES:
            shown = ""  # it may hold a key
        raise SettingsError(
            f"invalid {option} / {variable}: {error['msg'].rstrip('.')}{shown}"
        ) from None
