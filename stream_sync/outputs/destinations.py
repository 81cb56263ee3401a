"""Where a live stream can be pushed: ``rtmp[s]://host[:port]/app`` and a stream name.

Operators give whole URLs (``push_targets``, the stream name last, ``{channel}`` for
the channel's name); owners give the server URL and the platform's stream key
apart, the way YouTube, Twitch and Facebook show them. The stream name is usually
that key, so it never appears in ``where``, the only form logs and pages show.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}
URL_MAX = 1024
KEY_MAX = 512


class InvalidTarget(ValueError):
    """A push target that cannot work; the message never repeats a stream name or key."""


@dataclass(frozen=True, slots=True)
class PushTarget:
    host: str
    port: int
    app: str
    stream: str = ""  # may hold a key: never logged
    tls: bool = False
    target_id: int | None = None  # a channel's own target; None: the operator's
    name: str = ""

    @classmethod
    def parse(cls, url: str) -> PushTarget:
        """A whole URL, ``rtmp[s]://host[:port]/app/stream`` (the operator's setting)."""
        tls, host, port, path = _split(url.strip())
        app, _, stream = path.rpartition("/")
        if not app or not stream:
            raise InvalidTarget(
                f"push target {host} needs an app and a stream name: rtmp://host/app/stream"
            )
        return cls(host, port, app, stream, tls)

    @classmethod
    def server(
        cls, url: str, key: str, *, target_id: int | None = None, name: str = ""
    ) -> PushTarget:
        """A server URL, ``rtmp[s]://host[:port]/app``, and the stream key to publish with."""
        tls, host, port, app = _split(url.strip())
        if not app:
            raise InvalidTarget(f"push target {host} needs an app: rtmp://host/app")
        return cls(host, port, app, check_key(key), tls, target_id, name)

    @property
    def scheme(self) -> str:
        return "rtmps" if self.tls else "rtmp"

    @property
    def where(self) -> str:
        """What logs and the dashboard may show: no stream name, which may be a key."""
        return f"{self.scheme}://{self.host}:{self.port}/{self.app}"

    def stream_for(self, channel_name: str) -> str:
        return self.stream.replace("{channel}", channel_name)


def check_server_url(url: str) -> str:
    """The owner's server URL, normalised (no trailing slash), or InvalidTarget."""
    target = PushTarget.server(url, "k")
    default = DEFAULT_PORTS[target.scheme]
    port = "" if target.port == default else f":{target.port}"
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{target.scheme}://{host}{port}/{target.app}"


def check_key(key: str) -> str:
    if not key or len(key) > KEY_MAX or not key.isascii() or not key.isprintable():
        raise InvalidTarget(f"a stream key has 1 to {KEY_MAX} printable ASCII characters")
    if any(ch.isspace() for ch in key):
        raise InvalidTarget("a stream key has no spaces")
    return key


def _split(url: str) -> tuple[bool, str, int, str]:
    shape = "a push target is rtmp://host[:port]/app or rtmps://host[:port]/app"
    if len(url) > URL_MAX or not url.isascii() or not url.isprintable() or " " in url:
        raise InvalidTarget(f"{shape}, at most {URL_MAX} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidTarget(f"{shape}; the port is not a number from 1 to 65535") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise InvalidTarget(shape)
    if parts.username is not None or parts.password is not None:
        raise InvalidTarget("a push target URL has no user name or password")
    if parts.query or parts.fragment or "#" in url:
        raise InvalidTarget(f"{shape}, with no '?' or '#' part")
    if port == 0:
        raise InvalidTarget("a push target's port is not 0")
    return (
        parts.scheme == "rtmps",
        parts.hostname,
        port or DEFAULT_PORTS[parts.scheme],
        parts.path.strip("/"),
    )
