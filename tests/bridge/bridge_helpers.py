"""Helpers for the bridge tests: a running bridge, an edge-side MQTT client, a Kafka reader."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.bridge.service import Bridge, require_producer
from pipeline.metrics import Registry
from pipeline.operators.schema import Event
from pipeline.settings import Settings
from pipeline.testing import wait_until
from pipeline.topics import Kind, Topics

SITE = "site-a"


def make_event(cam: str, seq: int, *, site: str = SITE, ts: int | None = None) -> Event:
    return Event(
        id=f"{cam}-{seq}-{uuid.uuid4().hex[:6]}",
        site=site,
        cam=cam,
        ts=int(time.time() * 1000) if ts is None else ts,
        seq=seq,
        type="track_updated",
        track=seq % 7,
        label="person",
        score=0.8,
        box=(0.1, 0.1, 0.2, 0.3),
        det="test@1",
    )


def events_topic(settings: Settings, cam: str, site: str = SITE) -> str:
    return Topics(settings.mqtt.topic_prefix).camera(site, cam, Kind.EVENTS)


def bridge_settings(make_settings: Callable[..., Settings], **bridge: Any) -> Settings:
    """Test settings with a consumer group of their own for the downlink."""
    group = f"g{uuid.uuid4().hex[:8]}"
    return make_settings(bridge={"downlink_group": f"{group}-downlink", "ack_interval_ms": 50, **bridge})


@contextmanager
def running_bridge(settings: Settings, *, ready: bool = True, registry: Registry | None = None) -> Iterator[Bridge]:
    producer = require_producer(settings, timeout_s=15)
    bridge = Bridge(settings, producer, registry)
    bridge.start()
    try:
        if ready:
            assert bridge.wait_ready(30), "bridge not subscribed/assigned within 30 s"
        yield bridge
    finally:
        bridge.close()


@dataclass
class MqttPeer:
    """An edge- or subscriber-side MQTT 5 client that records what it receives."""

    client: mqtt.Client
    messages: list[mqtt.MQTTMessage] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published()

    def received(self, topic: str | None = None) -> list[mqtt.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def wait_for(self, pred: Callable[[list[mqtt.MQTTMessage]], bool], timeout_s: float = 15) -> bool:
        """Until ``pred`` holds for the messages received so far."""

        def holds() -> bool:
            with self.lock:
                return pred(list(self.messages))

        return wait_until(holds, timeout_s)


@contextmanager
def mqtt_peer(settings: Settings, *subscriptions: str, client_id: str | None = None) -> Iterator[MqttPeer]:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id or f"peer-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    peer = MqttPeer(client)
    subscribed = threading.Event()
    pending = set(subscriptions)

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with peer.lock:
            peer.messages.append(msg)

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        subscribed.set()

    connected = threading.Event()

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        connected.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = on_connect
    client.connect(settings.mqtt.host, settings.mqtt.port)
    client.loop_start()
    try:
        assert connected.wait(10)
        if pending:
            client.subscribe([(s, 1) for s in pending])
            assert subscribed.wait(10)
        yield peer
    finally:
        client.disconnect()
        client.loop_stop()


def read_topic(
    settings: Settings, topic: str, *, min_count: int, timeout_s: float = 20, settle_s: float = 0.0
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning, once at least ``min_count`` are there."""
    consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False, group_id=None)
    try:
        ids = consumer.partitions_for_topic(topic) or set(range(settings.kafka.partitions))
        parts = [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        enough_at: float | None = None
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(records)
            if len(out) >= min_count:
                enough_at = enough_at or time.monotonic()
                if time.monotonic() - enough_at >= settle_s:
                    break
        return out
    finally:
        consumer.close()


def kcat_env(workdir: Path) -> dict[str, str]:
    """Environment that runs Debian's kcat binary on the librdkafka bundled in the confluent-kafka
    wheel (dev extra). Debian 12's librdkafka 2.0.2 misparses Tansu 0.6's ApiVersions v3 reply
    ("read buffer underflow"); 2.16 talks to it, and librdkafka keeps its ABI across 2.x."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    bundled = sorted(libs.glob("librdkafka-*.so.1"))
    if not bundled:
        raise RuntimeError(f"no bundled librdkafka under {libs}; is confluent-kafka a manylinux wheel?")
    libdir = workdir / "librdkafka"
    libdir.mkdir(exist_ok=True)
    (libdir / "librdkafka.so.1").symlink_to(bundled[0])
    return {**os.environ, "LD_LIBRARY_PATH": str(libdir)}
