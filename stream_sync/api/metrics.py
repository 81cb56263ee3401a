"""Prometheus metrics, gathered when scraped: no counters to keep in step on the hot path.

Per channel (labelled by public id, never by key): status, bitrate, frame rate,
keyframe interval, bytes; refusals by reason; per node: publishers, Mbit/s, room.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..state.interfaces import NodeInfo
from .context import LiveStream

STATUSES = ("offline", "live", "reconnecting", "testing")
# (gauge, field of the stream's measurements) as the meter reports them
_MEASURED = (("kbps", "total_kbps_5s"), ("fps", "fps"), ("keyframe", "keyframe_interval"))


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Everything a scrape reports, gathered (asynchronously) before rendering."""

    channels: dict[int, tuple[str, str]]  # id -> (public id, status)
    live: dict[int, LiveStream]
    nodes: list[NodeInfo]
    refusals: dict[str, int]
    http_refused: dict[str, int] = field(default_factory=dict)  # by reason, this process


class ClusterCollector(Collector):
    def __init__(self, state: ClusterState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        channels = self._state.channels
        live = self._state.live
        status = GaugeMetricFamily(
            "stream_sync_channel_status",
            "1 for the channel's current status",
            labels=["channel", "status"],
        )
        for public_id, current in channels.values():
            for name in STATUSES:
                status.add_metric([public_id, name], 1.0 if current == name else 0.0)
        yield status
        gauges = {
            "kbps": GaugeMetricFamily(
                "stream_sync_channel_bitrate_kbps", "Total bitrate over 5 s", labels=["channel"]
            ),
            "fps": GaugeMetricFamily(
                "stream_sync_channel_fps", "Frame rate from timestamps", labels=["channel"]
            ),
            "keyframe": GaugeMetricFamily(
                "stream_sync_channel_keyframe_interval_seconds",
                "Seconds between the last two keyframes",
                labels=["channel"],
            ),
        }
        received = CounterMetricFamily(
            "stream_sync_channel_media_bytes", "Media bytes of the live publish", labels=["channel"]
        )
        for channel_id, stream in live.items():
            public_id = channels.get(channel_id, (str(channel_id), ""))[0]
            measured: dict[str, Any] = stream.measurements or {}
            for key, name in _MEASURED:
                value = measured.get(name)
                if isinstance(value, int | float):
                    gauges[key].add_metric([public_id], float(value))
            media = stream.counters.get("video_bytes", 0) + stream.counters.get("audio_bytes", 0)
            received.add_metric([public_id], float(media))
        yield from gauges.values()
        yield received
        publishers = GaugeMetricFamily("stream_sync_publishers", "Live publishers", value=len(live))
        yield publishers
        refusals = CounterMetricFamily(
            "stream_sync_publish_refusals", "Refused publishes by reason", labels=["reason"]
        )
        for reason, count in sorted(self._state.refusals.items()):
            refusals.add_metric([reason], float(count))
        yield refusals
        node_publishers = GaugeMetricFamily(
            "stream_sync_node_publishers", "Publishers per ingest node", labels=["node"]
        )
        node_mbps = GaugeMetricFamily(
            "stream_sync_node_mbps", "Ingested Mbit/s per node", labels=["node"]
        )
        node_room = GaugeMetricFamily(
            "stream_sync_node_has_room", "1 while the node admits publishers", labels=["node"]
        )
        guard = CounterMetricFamily(
            "stream_sync_ingest_guard",
            "Connections and publishes refused by the abuse limits, and timeouts, by reason",
            labels=["node", "reason"],
        )
        for node in self._state.nodes:
            node_publishers.add_metric([node.node_id], float(node.publishers))
            node_mbps.add_metric([node.node_id], node.mbps)
            node_room.add_metric([node.node_id], 1.0 if node.has_room else 0.0)
            for reason, count in sorted(node.guard.items()):
                guard.add_metric([node.node_id, reason], float(count))
        yield node_publishers
        yield node_mbps
        yield node_room
        yield guard
        http = CounterMetricFamily(
            "stream_sync_http_refused",
            "HTTP requests this API process refused: rate_limited (429), too_large (413),"
            " login_throttled (429)",
            labels=["reason"],
        )
        for reason, count in sorted(self._state.http_refused.items()):
            http.add_metric([reason], float(count))
        yield http


def render(state: ClusterState) -> bytes:
    """The Prometheus text exposition of state."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(state))
    return generate_latest(registry)
