"""The bridge process: uplink (MQTT -> Kafka) and downlink (Kafka -> MQTT) around one producer.

``run_bridge(settings, stop)`` blocks until ``stop`` is set, then drains: no new records go to
Kafka, the producer is flushed (up to ``bridge.drain_timeout_s``), the MQTT messages Kafka
acknowledged are acked, the last acks go to the edge, and both MQTT clients disconnect. Messages
taken but not in Kafka stay unacked in the broker's session and come back on the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from pipeline.bridge.downlink import Downlink
from pipeline.bridge.uplink import Uplink
from pipeline.compat.kafka_python import use_compiled_crc32c
from pipeline.errors import BrokerUnavailable
from pipeline.metrics import Registry, serve_http
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def producer_config(settings: Settings) -> dict[str, Any]:
    """acks=all; one request in flight per connection so kafka-python's own retries keep the
    per-camera (per-partition) order. No idempotence: the local Tansu loses producer state on
    restart, and duplicates are allowed downstream (events carry an id)."""
    b = settings.bridge
    return {
        **settings.kafka.client_kwargs(),
        "client_id": f"{b.client_id}-producer",
        "acks": "all",
        "linger_ms": b.linger_ms,
        "batch_size": b.batch_size,
        "compression_type": None if b.compression_type == "none" else b.compression_type,
        "enable_idempotence": False,
        "max_in_flight_requests_per_connection": 1,
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": 30_000,
        "max_block_ms": 5_000,
        "reconnect_backoff_max_ms": 2_000,
        # Topics are created with our partition count by `pipeline stack` / deployment, never
        # implicitly by a produce (a broker default would move keys to other partitions).
        "allow_auto_create_topics": False,
    }


def connect_producer(settings: Settings, stop: threading.Event) -> KafkaProducer | None:
    """A producer, retrying with backoff while Kafka is unreachable; None if stopped first."""
    log.debug("kafka-python record CRC-32C: %s", use_compiled_crc32c())
    backoff = 0.5
    while not stop.is_set():
        try:
            return KafkaProducer(**producer_config(settings))
        except (KafkaError, OSError) as exc:
            log.warning("Kafka at %s not reachable (%s); retrying in %.1f s",
                        settings.kafka.bootstrap_servers, exc, backoff)  # fmt: skip
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
    return None


class Bridge:
    """Both directions, started and stopped together. Tests use it directly; the command uses
    :func:`run_bridge`."""

    def __init__(self, settings: Settings, producer: KafkaProducer, registry: Registry | None = None) -> None:
        self.settings = settings
        self.metrics = registry or Registry()
        self.producer = producer
        self.uplink = Uplink(settings, producer, self.metrics)
        self.downlink = Downlink(settings, producer, self.metrics)
        self._http: ThreadingHTTPServer | None = None

    def start(self) -> None:
        self.uplink.start()
        self.downlink.start()
        port = self.settings.bridge.health_port
        if port is not None:
            host = self.settings.bridge.health_host
            self._http = serve_http(self.metrics, port, host=host, health=self.healthy)
            log.info("bridge: /healthz and /metrics on %s:%d", host, port)

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        """Subscribed on MQTT and holding downlink partitions."""
        deadline = time.monotonic() + timeout_s
        return self.uplink.subscribed.wait(timeout_s) and self.downlink.assigned.wait(
            max(0.0, deadline - time.monotonic())
        )

    def healthy(self) -> bool:
        return self.uplink.healthy() and self.downlink.healthy()

    def close(self) -> None:
        b = self.settings.bridge
        self.uplink.stop_taking()
        self.downlink.close()
        try:
            self.producer.flush(timeout=b.drain_timeout_s)
        except KafkaError as exc:
            log.warning("bridge: producer flush incomplete: %s", exc)
        self.uplink.close()
        self.producer.close(timeout=2)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        log.info("bridge: stopped (%s)", _summary(self.metrics))


def _summary(metrics: Registry) -> str:
    return (
        f"in={metrics.counter('bridge_uplink_received'):.0f}"
        f" produced={metrics.counter('bridge_uplink_produced'):.0f}"
        f" dead_letters={metrics.counter('dead_letters'):.0f}"
        f" downlink={metrics.counter('bridge_downlink_forwarded'):.0f}"
    )


def run_bridge(settings: Settings, stop: threading.Event, registry: Registry | None = None) -> None:
    """Run until ``stop`` is set; then drain and disconnect (see the module docstring)."""
    producer = connect_producer(settings, stop)
    if producer is None:
        return
    bridge = Bridge(settings, producer, registry)
    bridge.start()
    log.info("bridge %s: MQTT %s:%d -> Kafka %s (%s)", settings.bridge.client_id, settings.mqtt.host,
             settings.mqtt.port, settings.kafka.bootstrap_servers, settings.kafka.events_topic)  # fmt: skip
    try:
        last_report = time.monotonic()
        ready = False
        while not stop.wait(0.2):
            if not ready and bridge.wait_ready(0):
                ready = True
                log.info("bridge %s ready (subscribed %s, downlink assigned)", settings.bridge.client_id,
                         bridge.uplink.subscription)  # fmt: skip
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                log.info("bridge: %s inflight=%d", _summary(bridge.metrics), bridge.uplink.inflight)
    finally:
        bridge.close()


def require_producer(settings: Settings, timeout_s: float) -> KafkaProducer:
    """A producer or :class:`BrokerUnavailable` after ``timeout_s`` (tests, scripts)."""
    giving_up = threading.Event()
    timer = threading.Timer(timeout_s, giving_up.set)
    timer.start()
    try:
        producer = connect_producer(settings, giving_up)
    finally:
        timer.cancel()
    if producer is None:
        raise BrokerUnavailable(f"Kafka at {settings.kafka.bootstrap_servers} unreachable")
    return producer
