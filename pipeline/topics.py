"""MQTT topic names, built in one place.

Per camera: ``<prefix>/<site>/<camera>/<kind>`` where kind is one of :class:`Kind`.
All cameras' alerts also go to ``<prefix>/alerts``; node liveness to
``<prefix>/<site>/nodes/<node>/status`` (retained, with a Last Will). Model files offered as
chunks (``pipeline models push-chunks``): ``<prefix>/models/<name>/<version>/manifest`` and
``.../<index>``, retained; five levels, so no per-camera filter (four levels) matches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    EVENTS = "events"  # edge -> bridge: track events (QoS 1)
    STATUS = "status"  # edge -> anyone: camera status (retained)
    CONFIG = "config"  # cloud -> edge: per-camera config (retained)
    ACKS = "acks"  # bridge -> edge: seqs that Kafka has acknowledged
    ALERTS = "alerts"  # cloud -> subscribers: alerts of this camera
    SNAPSHOT = "snapshot"  # edge -> console: small retained JPEG (edge.snapshot_interval_s)


@dataclass(frozen=True)
class Topics:
    prefix: str

    def camera(self, site: str, camera: str, kind: Kind) -> str:
        return f"{self.prefix}/{site}/{camera}/{kind.value}"

    def all_cameras(self, kind: Kind, site: str = "+") -> str:
        """Subscription filter for one kind over every camera (of a site, or all sites)."""
        return f"{self.prefix}/{site}/+/{kind.value}"

    def all_alerts(self) -> str:
        return f"{self.prefix}/alerts"

    def node_status(self, site: str, node: str) -> str:
        return f"{self.prefix}/{site}/nodes/{node}/status"

    def model_chunks(self, name: str, version: str) -> str:
        """Subscription filter for a model version's manifest and every chunk."""
        return f"{self.prefix}/models/{name}/{version}/+"

    def model_manifest(self, name: str, version: str) -> str:
        return f"{self.prefix}/models/{name}/{version}/manifest"

    def model_chunk(self, name: str, version: str, index: int) -> str:
        return f"{self.prefix}/models/{name}/{version}/{index}"

    def parse_camera(self, topic: str) -> tuple[str, str, Kind] | None:
        """``(site, camera, kind)`` of a per-camera topic, or None if it is not one."""
        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != self.prefix or parts[2] == "nodes":
            return None
        try:
            kind = Kind(parts[3])
        except ValueError:
            return None
        return parts[1], parts[2], kind
