"""Pushing live streams on to other RTMP servers: the operator's targets
(``push_targets``: a packager, an origin) and each channel's own (YouTube, Twitch).

Each stream is pushed to each target by our own RTMP client (rtmp/client.py), over
its own connection, RTMPS when the URL says so: the metadata and codec records
first, then the media as received, from the next keyframe, with no transcoding. A
target that is slow or down touches neither the ingest nor the other targets. Its
queue is bounded in bytes: when full it drops what it holds and resumes at the next
keyframe (viewers see a jump, never an ever-growing delay); a lost or refused
connection is retried with backoff (1 s doubling to 30 s) for as long as the stream
is live. A target URL often carries a platform's stream key, so only its host and
app ever reach a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..outputs.destinations import PushTarget
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
from .outputs import Timeline

if TYPE_CHECKING:
    from .protocol import RtmpProtocol

log = logging.getLogger("stream_sync.relay")

# A push's queue holds at most QUEUE_MS of media time and QUEUE_BYTES: past either it
# skips to the next keyframe. The socket's own buffers hold more; hundreds of streams
# to one slow target must not add up to gigabytes.
QUEUE_MS = 2000
QUEUE_BYTES = 4 * 1024 * 1024
READ_BUFFER = 8192  # a target says little: acknowledgements, pings, a status
HIGH_WATER = 256 * 1024  # unsent bytes in the socket's user-space buffer: the target is slow
CONNECT_TIMEOUT = 10.0  # TCP, handshake, connect and publish, together
RETRY_FIRST, RETRY_MAX = 1.0, 30.0
VIDEO, AUDIO = 9, 8


class Push:
    """One live stream going to one target: a bounded queue and the task that sends it.

    A `Sink` of `outputs.OutputsHub`: it connects when first attached, and stays
    connected while its source is away within grace (detached: nothing to send).
    """

    def __init__(
        self, target: PushTarget, channel_name: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self.source: RtmpProtocol | None = None
        self.target = target
        self.stream = target.stream_for(channel_name)
        self.state = "connecting"  # connecting, live, retrying, failed (refused)
        self.reason: str | None = None  # why it is retrying
        self.dropped = 0  # times the queue overflowed and skipped to a keyframe
        self.sent_bytes = 0
        self.connects = 0  # connections that reached publishing
        self._tls = tls
        self._queue: deque[tuple[int, int, bytes]] = deque()
        self._queued = 0
        # While live: the connection, and whether a flush is due or the socket is full.
        self._client: ClientConnection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._flush_due = False
        self._blocked = False
        self._drainer: asyncio.Task[None] | None = None
        self._waiting_keyframe = True
        self._timeline = Timeline()
        self._overflows = LogThrottle(10.0)
        self._rate_mark: tuple[float, int] | None = None
        self._kbps = 0.0
        self._task: asyncio.Task[None] | None = None

    # Sink -----------------------------------------------------------------------------

    def attach(self, source: RtmpProtocol, gap_ms: int | None) -> None:
        self.source = source
        source.attach_sink(self)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif gap_ms is not None:  # the encoder is back: on from its next keyframe
            self._drop_queue()
            self._timeline.resume(gap_ms)

    def detach(self) -> None:
        self.source = None
        self._drop_queue()

    def status(self, now: float) -> dict[str, Any]:
        mark, sent = self._rate_mark, self.sent_bytes
        if mark is not None and now > mark[0]:
            self._kbps = (sent - mark[1]) * 8 / 1000 / (now - mark[0])
        self._rate_mark = (now, sent)
        return {
            "kind": "push",
            "target_id": self.target.target_id,
            "name": self.target.name,
            "where": self.target.where,
            "state": self.state if self.source is not None or self.state != "live" else "waiting",
            "reason": self.reason,
            "kbps": round(self._kbps, 1) if self.state == "live" else 0.0,
            "dropped": self.dropped,
        }

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
            self._drop_queue()
            self.dropped += 1
            self._overflows.log(
                log, logging.WARNING, "push to %s fell behind: skipping to the next keyframe",
                self.target.where,
            )  # fmt: skip
            return
        queue.append((type_id, timestamp, payload))
        self._queued += len(payload)
        if not self._flush_due and not self._blocked:
            # Once per turn of the event loop, after every message one read brought in.
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def queued(self) -> tuple[int, int]:
        """Messages and bytes waiting to be sent."""
        return len(self._queue), self._queued

    async def close(self) -> None:
        """The stream ended: tell the target (FCUnpublish) and hang up."""
        self.source = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # Inside -----------------------------------------------------------------------------

    def _drop_queue(self) -> None:
        self._queue.clear()
        self._queued = 0
        self._waiting_keyframe = True

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                await self._session()
            except (OSError, ProtocolError, TimeoutError, RelayRefused) as exc:
                refused = isinstance(exc, RelayRefused) and self.state != "live"
                if self.state == "live":
                    delay = RETRY_FIRST  # it worked until now: try again soon
                # Refused (a wrong key, a stream not set up yet on the platform): "failed"
                # until the owner acts, and asked again now and then.
                self.state, self.reason = "failed" if refused else "retrying", _reason(exc)
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
            reader, writer = await asyncio.open_connection(
                target.host,
                target.port,
                ssl=self._tls if target.tls else None,
                server_hostname=target.host if target.tls else None,
            )
        try:
            client = ClientConnection(
                buffer_size=READ_BUFFER,
                app=target.app,
                tc_url=f"{target.scheme}://{target.host}:{target.port}/{target.app}",
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
        if source is not None:
            if source.metadata:
                client.send_metadata(source.metadata)
            if source.video_sequence is not None:
                client.send_video(0, source.video_sequence)
            if source.audio_sequence is not None:
                client.send_audio(0, source.audio_sequence)
        self._drop_queue()  # a new connection starts with a picture
        self._timeline.restart()
        writer.write(client.data_to_send())
        self._client, self._writer = client, writer
        self.state, self.reason = "live", None
        self.connects += 1
        log.info("push to %s live", self.target.where)
        try:
            await _replies(reader, client)  # raises why the target went away
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self._flush()
                client.unpublish()
                writer.write(client.data_to_send())
                await asyncio.wait_for(writer.drain(), 1.0)
            raise
        finally:
            self._client = self._writer = None
            self._blocked = False
            if self._drainer is not None:
                self._drainer.cancel()
                self._drainer = None

    def _flush(self) -> None:
        """Everything queued out to the socket in one write; no task switch per message.

        Past HIGH_WATER bytes the socket is full: the queue holds what comes next
        (within its bounds) until the target has read enough.
        """
        self._flush_due = False
        client, writer = self._client, self._writer
        if client is None or writer is None or self._blocked:
            return
        queue, timeline, sent = self._queue, self._timeline, 0
        while queue:
            type_id, timestamp, payload = queue.popleft()
            at = timeline.map(timestamp)
            (client.send_video if type_id == VIDEO else client.send_audio)(at, payload)
            sent += len(payload)
        self._queued = 0
        self.sent_bytes += sent
        transport = writer.transport
        transport.write(client.take_output())  # one send, no copy unless the socket is full
        if transport.get_write_buffer_size() > HIGH_WATER:
            self._blocked = True
            self._drainer = asyncio.get_running_loop().create_task(self._unblock(writer))

    async def _unblock(self, writer: asyncio.StreamWriter) -> None:
        try:
            await writer.drain()
        except (OSError, RuntimeError):
            return  # the connection is gone: the reading side says why
        self._blocked = False
        if self._queue and writer is self._writer:
            self._flush()


class RelayRefused(Exception):
    """The target said no (a wrong key, a name in use): its own words, e.g. its status code."""


async def _replies(reader: asyncio.StreamReader, client: ClientConnection) -> None:
    """Read the target's side (acknowledgements, pings, an error) until it hangs up."""
    while True:
        data = await reader.read(READ_BUFFER)
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
