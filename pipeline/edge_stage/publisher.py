"""MQTT publisher: seventh step of the edge data path (... -> outbox -> publisher -> bridge).

One paho-mqtt 2.x client per node (callback API v2, MQTT 5, ``clean_start=False`` with a session
expiry so the broker keeps our subscriptions and queued acks while we are away), started with
``connect_async`` + ``loop_start`` and reconnecting on its own with a bounded delay.

A publisher thread moves due outbox rows to the broker at QoS 1, oldest first:

- only while connected (while disconnected events wait on disk, not in paho's memory);
- at most ``max_inflight`` messages awaiting PUBACK, and at ``drain_rate_per_s`` (token bucket,
  one second of burst), so a reconnect after a long outage drains in seq order without a flood;
- acks from the bridge (``.../acks``) are handed from paho's network thread through a bounded
  queue to this thread, which deletes the acknowledged rows.

``on_publish`` mids are tracked (paho may report a PUBACK before ``publish()`` returns; such early
mids are remembered). Retained status messages are kept per topic and re-sent on every connect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from pipeline.edge_stage.outbox import Outbox
from pipeline.metrics import Registry
from pipeline.mqtt_client import connect, make_client
from pipeline.operators.schema import decode_acks
from pipeline.settings import Settings
from pipeline.topics import Kind, Topics

log = logging.getLogger(__name__)

ConfigHandler = Callable[[str, bytes], None]  # (cam, payload)


class Publisher:
    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        metrics: Registry,
        *,
        on_config: ConfigHandler | None = None,
        max_inflight: int = 200,
        max_queued: int = 1000,
    ) -> None:
        self.settings = settings
        self.edge = settings.edge
        self.topics = Topics(settings.mqtt.topic_prefix)
        self.outbox = outbox
        self.metrics = metrics
        self.on_config = on_config
        self.max_inflight = max_inflight
        self._cams = [c.id for c in self.edge.cameras]
        self._lock = threading.Lock()
        self._pending: dict[int, int] = {}  # mid -> payload bytes, awaiting PUBACK
        self._early: set[int] = set()  # PUBACKs that arrived before publish() returned
        self._other: set[int] = set()  # mids of status messages awaiting PUBACK
        self._retained: dict[str, bytes] = {}  # status topic -> last payload (re-sent on connect)
        self._acks: queue.Queue[tuple[str, tuple[tuple[int, int], ...]]] = queue.Queue(maxsize=10_000)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._ever_connected = False
        self._thread: threading.Thread | None = None
        self.events_published = 0
        self.bytes_published = 0
        self.node_topic = self.topics.node_status(self.edge.site, self.edge.node_id)
        self.client = self._make_client(max_queued)

    # ------------------------------------------------------------------ client

    def _node_payload(self, state: str) -> bytes:
        return json.dumps(
            {"v": 1, "site": self.edge.site, "node": self.edge.node_id, "state": state, "ts": int(time.time() * 1000)},
            separators=(",", ":"),
        ).encode()

    def _make_client(self, max_queued: int) -> mqtt.Client:
        client = make_client(
            self.settings.mqtt,
            self.edge.node_id,
            max_inflight=max(20, self.max_inflight),
            max_queued=max_queued,
            reconnect_max_s=8,
        )
        client.will_set(self.node_topic, self._node_payload("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        connect(self.client, self.settings.mqtt, persistent=True)
        self._thread = threading.Thread(target=self._run, name="edge-publisher", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # ------------------------------------------------------------------ callbacks (network thread)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT connect refused: %s", reason)
            self.metrics.inc("mqtt_connect_failures_total", help="Refused MQTT connects.")
            return
        if self._ever_connected:
            self.metrics.inc("mqtt_reconnects_total", help="MQTT reconnects after a lost connection.")
        self._ever_connected = True
        subs = []
        for cam in self._cams:
            subs.append((self.topics.camera(self.edge.site, cam, Kind.ACKS), 1))
            subs.append((self.topics.camera(self.edge.site, cam, Kind.CONFIG), 1))
        client.subscribe(subs)
        self._publish_other(self.node_topic, self._node_payload("online"))
        with self._lock:
            retained = list(self._retained.items())
        for topic, payload in retained:
            self._publish_other(topic, payload)
        self._connected.set()
        self.metrics.set("mqtt_connected", 1, help="1 while connected to the MQTT broker.")
        log.info(
            "MQTT connected to %s:%s (session present: %s)",
            self.settings.mqtt.host,
            self.settings.mqtt.port,
            getattr(flags, "session_present", None),
        )
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        self.metrics.set("mqtt_connected", 0)
        if not self._stopping.is_set():
            log.warning("MQTT disconnected: %s", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            size = self._pending.pop(mid, None)
            if size is not None:
                self._confirmed(size)
            elif mid in self._other:
                self._other.discard(mid)
            else:
                self._early.add(mid)

    def _confirmed(self, size: int) -> None:
        # called with self._lock held
        self.events_published += 1
        self.bytes_published += size
        self.metrics.inc("events_published_total", help="Events the broker acknowledged (PUBACK).")
        self.metrics.inc("bytes_published_total", size, help="Event payload bytes acknowledged.")

    def _publish_other(self, topic: str, payload: bytes) -> None:
        """A retained QoS 1 status message (its PUBACK is not an event's)."""
        info = self.client.publish(topic, payload, qos=1, retain=True)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
            else:
                self._other.add(info.mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = self.topics.parse_camera(msg.topic)
        if parsed is None or parsed[0] != self.edge.site:
            return
        _, cam, kind = parsed
        if kind == Kind.ACKS:
            acks = decode_acks(bytes(msg.payload))
            if not hasattr(acks, "ranges") or getattr(acks, "cam", None) != cam:
                self.metrics.inc("acks_rejected_total", help="Malformed ack messages ignored.")
                return
            try:
                self._acks.put_nowait((cam, acks.ranges))
            except queue.Full:
                self.metrics.inc("acks_dropped_total", help="Ack messages dropped: queue full.")
            self._wake.set()
        elif kind == Kind.CONFIG and self.on_config is not None:
            try:
                self.on_config(cam, bytes(msg.payload))
            except Exception:  # a bug in the handler must not kill paho's network thread
                log.exception("config handler failed for %s", cam)

    # ------------------------------------------------------------------ API for other threads

    def kick(self) -> None:
        """New rows are in the outbox."""
        self._wake.set()

    def publish_status(self, topic: str, payload: bytes) -> None:
        """Retained QoS 1 status; remembered and re-sent on reconnect."""
        with self._lock:
            self._retained[topic] = payload
        if self.connected:
            self._publish_other(topic, payload)

    def inflight(self) -> int:
        with self._lock:
            return len(self._pending)

    # ------------------------------------------------------------------ publisher thread

    def _process_acks(self) -> None:
        while True:
            try:
                cam, ranges = self._acks.get_nowait()
            except queue.Empty:
                return
            self.outbox.ack(cam, ranges)

    def _publish_due(self, budget: int) -> int:
        room = self.max_inflight - self.inflight()
        n = min(budget, room)
        if n <= 0:
            return 0
        rows = self.outbox.due(self.edge.ack_timeout_s, n)
        sent: list[int] = []
        for row in rows:
            if not self.connected:
                break
            info = self.client.publish(row.topic, row.payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self.metrics.inc("publish_refused_total", help="publish() refused (paho queue full).")
                break
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self._confirmed(len(row.payload))
                else:
                    self._pending[info.mid] = len(row.payload)
            if row.attempts > 0:
                self.metrics.inc("outbox_replayed_total", help="Events re-published: no ack within ack_timeout_s.")
            sent.append(row.rid)
        if sent:
            self.outbox.mark_sent(sent)
        return len(sent)

    def _run(self) -> None:
        rate = self.edge.drain_rate_per_s
        tokens, last = rate, time.monotonic()
        next_expire = 0.0
        while not self._stopping.is_set():
            try:
                self._process_acks()
                now = time.monotonic()
                tokens = min(rate, tokens + (now - last) * rate)
                last = now
                if now >= next_expire:
                    self.outbox.expire()
                    next_expire = now + 60
                if self.connected and tokens >= 1:
                    tokens -= self._publish_due(int(tokens))
            except Exception:
                log.exception("publisher loop error")
                self.metrics.inc("publisher_errors_total", help="Unexpected errors in the publisher loop.")
                self._stopping.wait(1.0)
            self._wake.wait(0.1 if tokens >= 1 else max(0.01, 1.0 / rate))
            self._wake.clear()
        self._process_acks()

    def drained(self) -> bool:
        """Nothing unsent in the outbox and no PUBACK outstanding (acks may still be due)."""
        return self.inflight() == 0 and self.outbox.unsent() == 0

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` node status, stop the loop thread and the client."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.connected:
            info = self.client.publish(self.node_topic, self._node_payload("offline"), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=min(timeout, 2.0))
        self.client.disconnect()
        self.client.loop_stop()
