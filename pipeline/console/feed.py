"""What the console knows from MQTT: fleet status, live alerts, crops, snapshots, camera config.

One paho client (network thread) subscribes to
- ``<prefix>/+/+/status`` (retained camera status) and ``<prefix>/+/nodes/+/status`` (retained
  node liveness with a Last Will): the fleet page;
- ``<prefix>/alerts``: live alerts, fanned out to every Server-Sent-Events listener;
- ``<prefix>/+/+/events``: the live tracks' boxes (drawn on the snapshot, at most
  ``TRACKS_KEPT`` per camera) and the crops of ``track_started`` events (thumbnails of live
  alerts, newest ``CROPS_KEPT`` kept);
- ``<prefix>/+/+/snapshot`` (retained JPEG the edge publishes at a low cadence) and
  ``<prefix>/+/+/config`` (retained camera config: the rules and masks drawn on the snapshot).

State is guarded by one lock; listeners are asyncio queues fed with ``call_soon_threadsafe``,
each bounded (``LISTENER_QUEUE``): a browser tab that stops reading loses its oldest alerts,
counted, and never blocks the MQTT thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from pipeline.metrics import Registry
from pipeline.mqtt_client import connect, make_client
from pipeline.operators.schema import Alert, Box, Rejected, decode_alert, decode_event
from pipeline.operators.wire import CameraStatus, NodeStatus, decode_camera_status, decode_config, decode_node_status
from pipeline.settings import Settings
from pipeline.topics import Kind, Topics

log = logging.getLogger(__name__)
CROPS_KEPT = 500
TRACKS_KEPT = 50  # live track boxes per camera
LISTENER_QUEUE = 100
SNAPSHOT_MAX_BYTES = 256 * 1024


@dataclass
class CameraView:
    site: str
    cam: str
    status: dict[str, Any] = field(default_factory=dict)
    status_at_ms: int = 0
    config: dict[str, Any] = field(default_factory=dict)  # merged config of retained records
    config_rev: int = 0
    snapshot: bytes | None = None
    snapshot_at_ms: int = 0
    tracks: dict[int, tuple[str, Box, int]] = field(default_factory=dict)  # live tracks: label, box, ts
    fps: float | None = None  # frames read per second between the last two status messages

    def take_status(self, status: dict[str, Any], seen_ms: int) -> None:
        old, old_ts = _frames(self.status), _ts(self.status, self.status_at_ms)
        new, new_ts = _frames(status), _ts(status, seen_ms)
        if old is not None and new is not None and new_ts > old_ts and new >= old:
            self.fps = (new - old) * 1000 / (new_ts - old_ts)
        self.status, self.status_at_ms = status, seen_ms


@dataclass(frozen=True, slots=True)
class LiveAlert:
    alert: Alert
    received_ms: int

    @property
    def latency_ms(self) -> int:
        return self.received_ms - self.alert.event_ts


class ConsoleFeed:
    def __init__(self, settings: Settings, metrics: Registry, client_id: str) -> None:
        self.settings = settings
        self.metrics = metrics
        self.topics = Topics(settings.mqtt.topic_prefix)
        self._lock = threading.Lock()
        self.cameras: dict[tuple[str, str], CameraView] = {}
        self.nodes: dict[tuple[str, str], dict[str, Any]] = {}
        self.recent: deque[LiveAlert] = deque(maxlen=settings.console.live_alerts_kept)
        self._crops: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[LiveAlert]]] = set()
        self.connected = threading.Event()
        self._client = make_client(settings.mqtt, client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *a: self.connected.clear()
        self._client.on_message = self._on_message

    def start(self) -> None:
        connect(self._client, self.settings.mqtt)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        p = self.topics.prefix
        client.subscribe([(f"{p}/+/+/status", 0), (f"{p}/+/nodes/+/status", 0), (self.topics.all_alerts(), 1),
                          (f"{p}/+/+/events", 0), (f"{p}/+/+/snapshot", 0), (f"{p}/+/+/config", 0)])  # fmt: skip
        self.connected.set()
        log.info("console: MQTT connected, watching %s/#", p)

    # ------------------------------------------------------------------ MQTT thread

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._handle(msg.topic, bytes(msg.payload), retained=bool(msg.retain))
        except Exception:  # one odd message must not stop the network thread
            log.exception("console: message on %s failed", msg.topic)

    def _handle(self, topic: str, raw: bytes, *, retained: bool = False) -> None:
        now = int(time.time() * 1000)
        if topic == self.topics.all_alerts():
            self._take_alert(raw, now)
            return
        parts = topic.split("/")
        if len(parts) == 5 and parts[2] == "nodes" and parts[4] == "status":
            node = self._decoded("node_status", decode_node_status(raw))
            if node is not None:
                with self._lock:
                    self.nodes[(parts[1], parts[3])] = {**node, "received_ms": now}
            return
        if len(parts) == 4 and parts[3] == "snapshot":
            if len(raw) <= SNAPSHOT_MAX_BYTES and raw[:2] == b"\xff\xd8":
                with self._lock:
                    view = self._camera(parts[1], parts[2])
                    view.snapshot, view.snapshot_at_ms = raw, now
            return
        parsed = self.topics.parse_camera(topic)
        if parsed is None:
            return
        site, cam, kind = parsed
        if kind is Kind.STATUS:
            status = self._decoded("camera_status", decode_camera_status(raw))
            if status is None:
                return
            with self._lock:
                # A retained copy is as old as the node says (it may be from a node long gone);
                # a live one is fresh now, whatever the node's clock says.
                self._camera(site, cam).take_status(status, _ts(status, now) if retained else now)
        elif kind is Kind.CONFIG:
            self._take_config(site, cam, raw)
        elif kind is Kind.EVENTS:
            self._take_event(raw)

    def _decoded(self, kind: str, decoded: CameraStatus | NodeStatus | Rejected) -> dict[str, Any] | None:
        """A status as the pages read it (the wire module decodes: one codec per payload); None
        for a payload it refused."""
        if isinstance(decoded, Rejected):
            self._refused(kind, decoded)
            return None
        return asdict(decoded)

    def _refused(self, kind: str, rejected: Rejected) -> None:
        """A payload the wire module refused: counted with its reason, logged, not shown."""
        self.metrics.inc("console_messages_rejected_total", help="MQTT payloads the console refused.",
                         kind=kind, reason=rejected.reason)  # fmt: skip
        log.warning("console: %s refused: %s %s", kind, rejected.reason, rejected.detail)

    def _camera(self, site: str, cam: str) -> CameraView:
        view = self.cameras.get((site, cam))
        if view is None:
            view = self.cameras[(site, cam)] = CameraView(site, cam)
        return view

    def _take_alert(self, raw: bytes, now: int) -> None:
        alert = decode_alert(raw)
        if isinstance(alert, Rejected):
            self.metrics.inc("console_alerts_rejected_total", help="Undecodable alerts on MQTT.", reason=alert.reason)
            return
        live = LiveAlert(alert, now)
        with self._lock:
            if any(a.alert.id == alert.id for a in self.recent):  # the downlink may resend
                return
            self.recent.appendleft(live)
            listeners = list(self._listeners)
        self.metrics.inc("console_alerts_total", help="Live alerts received.")
        for loop, queue in listeners:
            loop.call_soon_threadsafe(_offer, queue, live, self.metrics)

    def _take_event(self, raw: bytes) -> None:
        """Live track boxes (drawn on the snapshot) and the crops of starting tracks (thumbnails)."""
        event = decode_event(raw, self.settings.mqtt.max_payload_bytes)
        if isinstance(event, Rejected):
            return
        jpeg = None
        if event.type == "track_started" and event.crop is not None:
            try:
                jpeg = base64.b64decode(event.crop, validate=True)
            except (binascii.Error, ValueError):
                jpeg = None
        with self._lock:
            view = self._camera(event.site, event.cam)
            if event.type == "track_ended":
                view.tracks.pop(event.track, None)
            else:
                view.tracks[event.track] = (event.label, event.box, event.ts)
            if len(view.tracks) > TRACKS_KEPT:  # tracks whose end was lost: oldest first
                for track, _ in sorted(view.tracks.items(), key=lambda kv: kv[1][2])[: len(view.tracks) - TRACKS_KEPT]:
                    del view.tracks[track]
            if jpeg is not None:
                self._crops[(event.site, event.cam, event.track)] = jpeg
                while len(self._crops) > CROPS_KEPT:
                    self._crops.popitem(last=False)

    def _take_config(self, site: str, cam: str, raw: bytes) -> None:
        record = decode_config(raw)
        if isinstance(record, Rejected):
            self._refused("config", record)
            return
        config, rev = dict(record.config), record.rev
        with self._lock:
            view = self._camera(site, cam)
            if rev > view.config_rev:
                view.config, view.config_rev = {**view.config, **config}, rev

    # ------------------------------------------------------------------ readers (any thread)

    def crop(self, site: str, cam: str, track: int) -> bytes | None:
        with self._lock:
            return self._crops.get((site, cam, track))

    def camera(self, site: str, cam: str) -> CameraView | None:
        with self._lock:
            view = self.cameras.get((site, cam))
            return None if view is None else CameraView(**{**view.__dict__, "tracks": dict(view.tracks)})

    def fleet(self) -> dict[str, dict[str, Any]]:
        """sites -> {"nodes": {node: status}, "cameras": [row, ...]} with online/offline decided now."""
        now = int(time.time() * 1000)
        stale_ms = self.settings.console.offline_after_s * 1000
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for (site, node), status in sorted(self.nodes.items()):
                out.setdefault(site, {"nodes": {}, "cameras": []})["nodes"][node] = status
            for (site, cam), view in sorted(self.cameras.items()):
                if not view.status:
                    continue
                s = view.status
                metrics: dict[str, Any] = s["metrics"] if isinstance(s.get("metrics"), dict) else {}
                ts = view.status_at_ms
                state = str(s.get("state", "unknown"))
                node_id = str(s.get("node", ""))
                node_state = self.nodes.get((site, node_id), {}).get("state")
                if state == "online" and node_state == "offline":
                    state = "offline (node down)"  # its Last Will: the node died without a word
                online = state == "online" and now - ts <= stale_ms
                out.setdefault(site, {"nodes": {}, "cameras": []})["cameras"].append({
                    "cam": cam, "node": node_id, "state": state if online or state != "online" else "offline (stale)",
                    "online": online, "reason": s.get("reason", ""), "model": s.get("model", ""), "last_seen_ms": ts,
                    "fps": view.fps, "outbox_depth": metrics.get("outbox_depth"),
                    "model_rollout": _rollout(metrics),
                    "config_rev": metrics.get("config_rev"), "has_snapshot": view.snapshot is not None,
                })  # fmt: skip
        return out

    def subscribe(self) -> asyncio.Queue[LiveAlert]:
        queue: asyncio.Queue[LiveAlert] = asyncio.Queue(LISTENER_QUEUE)
        with self._lock:
            self._listeners.add((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[LiveAlert]) -> None:
        with self._lock:
            self._listeners = {(loop, q) for loop, q in self._listeners if q is not queue}


def _offer(queue: asyncio.Queue[LiveAlert], live: LiveAlert, metrics: Registry) -> None:
    if queue.full():
        queue.get_nowait()
        metrics.inc("console_sse_dropped_total", help="Live alerts a slow browser tab never got.")
    queue.put_nowait(live)


def _rollout(metrics: dict[str, Any]) -> str:
    """The edge's model update state (pipeline/edge_stage/model_swap.py snapshot) in a few words."""
    parts = [str(metrics[k]) for k in ("model_update", "model_error") if metrics.get(k)]
    if metrics.get("model_previous"):
        parts.append(f"previous {metrics['model_previous']}")
    return ", ".join(parts)


def _frames(status: dict[str, Any]) -> int | None:
    metrics = status.get("metrics")
    frames = metrics.get("frames_read") if isinstance(metrics, dict) else None
    return frames if isinstance(frames, int) else None


def _ts(status: dict[str, Any], default: int) -> int:
    ts = status.get("ts")
    return ts if isinstance(ts, int) else default
