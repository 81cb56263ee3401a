"""Pushing live streams on to other RTMP servers (issue 12), first step: the operator's
global targets (``push_targets``: a packager, an origin), for every live stream.

Each stream is pushed to each target by our own RTMP client (rtmp/client.py), over
its own connection: the metadata and codec records first, then the media as
received, from the next keyframe, with no transcoding. A target that is slow or
down touches neither the ingest nor the other targets. Its queue is bounded in
bytes: when full it drops what it holds and resumes at the next keyframe (viewers
see a jump, never an ever-growing delay); a lost or refused connection is retried
with backoff (1 s doubling to 30 s) for as long as the stream is live. A target URL
often carries a platform's stream key, so only its host and app ever reach a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..rtmp import flv
from ..rtmp.client import (
    ClientConnection,
    Connected,
    ConnectRefused,
    PublishStarted,
    StatusReceived,
)
from ..rtmp.errors import ProtocolError
from ..state.inprocess import LogThrottle

if TYPE_CHECKING:
    from .protocol import RtmpProtocol

log = logging.getLogger("stream_sync.relay")

# A push's queue holds at most QUEUE_MS of media time and QUEUE_BYTES: past either it
# skips to the next keyframe. The socket's own buffers hold more; hundreds of streams
# to one slow target must not add up to gigabytes.
QUEUE_MS = 2000
QUEUE_BYTES = 4 * 1024 * 1024
CONNECT_TIMEOUT = 10.0  # TCP, handshake, connect and publish, together
RETRY_FIRST, RETRY_MAX = 1.0, 30.0
VIDEO, AUDIO = 9, 8


class InvalidTarget(ValueError):
    """A push target URL that cannot work; the message never repeats the URL's path."""


@dataclass(frozen=True, slots=True)
class PushTarget:
    """``rtmp://host[:port]/app/stream``; ``{channel}`` in the stream name is the channel's."""

    host: str
    port: int
    app: str
    stream: str  # may hold a key: never logged

    @classmethod
    def parse(cls, url: str) -> PushTarget:
        parts = urlsplit(url.strip())
        if parts.scheme != "rtmp":
            raise InvalidTarget("a push target must be an rtmp:// URL")
        if not parts.hostname:
            raise InvalidTarget("a push target needs a host")
        try:
            port = parts.port or 1935
        except ValueError:
            raise InvalidTarget(f"push target {parts.hostname} has a bad port") from None
        app, _, stream = parts.path.lstrip("/").rpartition("/")
        if not app or not stream:
            raise InvalidTarget(
                f"push target {parts.hostname} needs an app and a stream name: "
                "rtmp://host/app/stream"
            )
        return cls(parts.hostname, port, app, stream)

    @property
    def where(self) -> str:
        """What logs and the dashboard may show: no stream name, which may be a key."""
        return f"rtmp://{self.host}:{self.port}/{self.app}"

    def stream_for(self, channel_name: str) -> str:
        return self.stream.replace("{channel}", channel_name)


class Push:
    """One live stream going to one target: a bounded queue and the task that sends it."""

    def __init__(self, source: RtmpProtocol, target: PushTarget, channel_name: str) -> None:
        self.source = source
        self.target = target
        self.stream = target.stream_for(channel_name)
        self.state = "connecting"  # connecting, live, retrying
        self.reason: str | None = None  # why it is retrying
        self.dropped = 0  # times the queue overflowed and skipped to a keyframe
        self.sent_bytes = 0
        self._queue: deque[tuple[int, int, bytes]] = deque()
        self._queued = 0
        self._ready = asyncio.Event()
        self._waiting_keyframe = True
        self._overflows = LogThrottle(10.0)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def media(self, type_id: int, timestamp: int, payload: bytes, keyframe: bool) -> None:
        """Called for every media message of the source: never waits, never grows past the bound.

        Codec records always go (a target that connected before the encoder sent them
        needs them); frames only from a keyframe on.
        """
        if self.state != "live":
            return  # connecting or retrying: a new connection starts from the records
        if self._waiting_keyframe and not _record(type_id, payload):
            if not keyframe:
                return
            self._waiting_keyframe = False
        queue = self._queue
        if self._queued + len(payload) > QUEUE_BYTES or (
            queue and timestamp - queue[0][1] > QUEUE_MS
        ):
            self._queue.clear()
            self._queued = 0
            self._waiting_keyframe = True
            self.dropped += 1
            self._overflows.log(
                log, logging.WARNING, "push to %s fell behind: skipping to the next keyframe",
                self.target.where,
            )  # fmt: skip
            return
        self._queue.append((type_id, timestamp, payload))
        self._queued += len(payload)
        self._ready.set()

    def queued(self) -> tuple[int, int]:
        """Messages and bytes waiting to be sent."""
        return len(self._queue), self._queued

    async def close(self) -> None:
        """The stream ended: tell the target (FCUnpublish) and hang up."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                await self._session()
            except (OSError, ProtocolError, TimeoutError, RelayRefused) as exc:
                if self.state == "live":
                    delay = RETRY_FIRST  # it worked until now: try again soon
                self.state, self.reason = "retrying", _reason(exc)
                where, why = self.target.where, self.reason
                log.warning("push to %s failed (%s); retrying in %g s", where, why, delay)
            except Exception:  # a bug: logged once per attempt, with backoff, never silent
                self.state, self.reason = "retrying", "internal error"
                log.exception("push to %s failed; retrying in %g s", self.target.where, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _session(self) -> None:
        target = self.target
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            client = ClientConnection(
                app=target.app,
                tc_url=f"rtmp://{target.host}:{target.port}/{target.app}",
                now=time.monotonic(),
                epoch_ms=int(time.time() * 1000),
            )
            writer.write(client.data_to_send())
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._publish(reader, writer, client)
            await self._stream(reader, writer, client)
        finally:
            writer.close()

    async def _publish(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: ClientConnection
    ) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the target closed the connection")
            for event in client.receive_data(data):
                if isinstance(event, Connected):
                    client.publish(self.stream)
                elif isinstance(event, ConnectRefused):
                    raise RelayRefused(str(event.info.get("code") or "connect refused"))
                elif isinstance(event, PublishStarted):
                    writer.write(client.data_to_send())
                    return
                elif isinstance(event, StatusReceived) and event.level == "error":
                    raise RelayRefused(event.code or "publish refused")
            writer.write(client.data_to_send())

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: ClientConnection
    ) -> None:
        source = self.source
        if source.metadata:
            client.send_metadata(source.metadata)
        if source.video_sequence is not None:
            client.send_video(0, source.video_sequence)
        if source.audio_sequence is not None:
            client.send_audio(0, source.audio_sequence)
        self._waiting_keyframe = True  # a new connection starts with a picture
        self.state, self.reason = "live", None
        log.info("push to %s live", self.target.where)
        replies = asyncio.ensure_future(_replies(reader, client))
        base: int | None = None
        try:
            while True:
                while self._queue:
                    type_id, timestamp, payload = self._queue.popleft()
                    self._queued -= len(payload)
                    base = timestamp if base is None else base
                    at = max(0, timestamp - base)
                    (client.send_video if type_id == VIDEO else client.send_audio)(at, payload)
                    self.sent_bytes += len(payload)
                writer.write(client.data_to_send())
                await writer.drain()  # a slow target holds this task only: the queue fills
                self._ready.clear()
                if not self._queue:
                    waiting = asyncio.ensure_future(self._ready.wait())
                    await asyncio.wait({waiting, replies}, return_when=asyncio.FIRST_COMPLETED)
                    waiting.cancel()
                if replies.done():
                    replies.result()  # raises why the target went away
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                client.unpublish()
                writer.write(client.data_to_send())
                await asyncio.wait_for(writer.drain(), 1.0)
            raise
        finally:
            replies.cancel()


class RelayRefused(Exception):
    """The target said no (a wrong key, a name in use): its own words, e.g. its status code."""


async def _replies(reader: asyncio.StreamReader, client: ClientConnection) -> None:
    """Read the target's side (acknowledgements, pings, an error) until it hangs up."""
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("the target closed the connection")
        for event in client.receive_data(data):
            if isinstance(event, StatusReceived) and event.level == "error":
                raise RelayRefused(event.code or "the target stopped the stream")


def _record(type_id: int, payload: bytes) -> bool:
    """A sequence start or end, or another message that is not a frame (the hot path's call)."""
    if len(payload) < 2:
        return False
    classify = flv.classify_video if type_id == VIDEO else flv.classify_audio
    return classify(payload[0], payload[1]) == flv.COLLECT


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


class RelayHub:
    """Every live stream of this ingest process, pushed to every global target."""

    def __init__(self, targets: list[PushTarget]) -> None:
        self.targets = targets
        self._pushes: dict[str, list[Push]] = {}  # by connection id

    def started(self, proto: RtmpProtocol, channel_name: str) -> None:
        if not self.targets:
            return
        pushes = [Push(proto, target, channel_name) for target in self.targets]
        self._pushes[proto.id] = pushes
        proto.attach_relays(pushes)

    async def ended(self, proto: RtmpProtocol) -> None:
        for push in self._pushes.pop(proto.id, []):
            await push.close()

    def pushes(self, proto: RtmpProtocol) -> list[Push]:
        return list(self._pushes.get(proto.id, ()))
