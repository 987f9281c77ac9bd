"""An MQTT subscriber of alerts: what a user's dashboard or phone gateway would run.

Deduplicates by alert id (delivery is at-least-once end to end), counts duplicates and bad
payloads, and measures capture -> alert latency from each alert's ``event_ts``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from pipeline.metrics import percentile
from pipeline.mqtt_client import connect, make_client
from pipeline.operators.schema import Alert, Rejected, decode_alert
from pipeline.settings import Settings
from pipeline.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class ReceivedAlert:
    alert: Alert
    received_ms: int

    @property
    def latency_ms(self) -> int:
        return self.received_ms - self.alert.event_ts


@dataclass
class AlertStats:
    unique: dict[str, ReceivedAlert] = field(default_factory=dict)
    duplicates: int = 0
    rejected: int = 0

    def latencies_ms(self) -> list[int]:
        return [r.latency_ms for r in self.unique.values()]

    def latency_quantile(self, q: float) -> float | None:
        return percentile(self.latencies_ms(), q)


class AlertSubscriber:
    """Subscribes to ``<prefix>/alerts`` (all cameras) with QoS 1 and a persistent session."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        on_alert: Callable[[ReceivedAlert], None] | None = None,
        topic: str | None = None,
    ) -> None:
        self._settings = settings
        self._topic = topic or Topics(settings.mqtt.topic_prefix).all_alerts()
        self._on_alert = on_alert
        self._lock = threading.Lock()
        self.stats = AlertStats()
        self._subscribed = threading.Event()
        self._client = make_client(settings.mqtt, client_id)
        self._client.on_connect = self._handle_connect
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._handle_message

    def start(self, timeout_s: float = 10.0) -> AlertSubscriber:
        connect(self._client, self._settings.mqtt, persistent=True)
        if not self._subscribed.wait(timeout_s):
            raise TimeoutError(f"no SUBACK for {self._topic} within {timeout_s}s")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> AlertSubscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle_connect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object = None
    ) -> None:
        client.subscribe(self._topic, qos=1)

    def _handle_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = int(time.time() * 1000)
        decoded = decode_alert(bytes(msg.payload))
        if isinstance(decoded, Rejected):
            with self._lock:
                self.stats.rejected += 1
            log.warning("bad alert payload on %s: %s %s", msg.topic, decoded.reason, decoded.detail)
            return
        received = ReceivedAlert(decoded, now)
        with self._lock:
            if decoded.id in self.stats.unique:
                self.stats.duplicates += 1
                return
            self.stats.unique[decoded.id] = received
        if self._on_alert:
            self._on_alert(received)

    def wait_quiet(self, quiet_s: float, timeout_s: float) -> int:
        """Wait until no new alert arrived for ``quiet_s`` (or ``timeout_s``); return the count."""
        deadline = time.monotonic() + timeout_s
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                n = len(self.stats.unique)
            if n != last_count:
                last_count, last_change = n, time.monotonic()
            elif time.monotonic() - last_change >= quiet_s:
                break
            time.sleep(0.1)
        return last_count


def format_alert(r: ReceivedAlert) -> str:
    a = r.alert
    cloud = "-" if a.cloud_score is None else f"{a.cloud_score:.2f}"
    return (
        f"ALERT {a.id[:12]} {a.site}/{a.cam} rule={a.rule} {a.label} track={a.track} "
        f"edge={a.edge_score:.2f} cloud={cloud} fused={a.fused_score:.2f} {a.verification} "
        f"latency={r.latency_ms} ms event={a.event_id[:12]}"
    )
