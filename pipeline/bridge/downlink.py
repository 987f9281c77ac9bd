"""Kafka -> MQTT: alerts to subscribers, camera config to the edge (retained).

One ``bridge-downlink`` thread polls a kafka-python consumer (auto commit off), publishes each
record with QoS 1, waits for the PUBACKs (and for the dead-letter records of bad ones) and only
then commits the batch's offsets. If the PUBACKs do not come in time, it seeks back and sends the
batch again: subscribers may see an alert twice, never miss one.

- alerts topic: value = ``encode_alert`` bytes, forwarded unchanged to
  ``<prefix>/<site>/<cam>/alerts`` and ``<prefix>/alerts``;
- config topic: value = ``{"v":1,"site","cam","rev","config":{...}}``, forwarded retained to
  ``<prefix>/<site>/<cam>/config``;
- anything undecodable goes to the dead-letter topic with source ``kafka``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from pipeline.bridge.mqtt_link import PubackTracker
from pipeline.metrics import Registry
from pipeline.mqtt_client import connect_properties, failed, make_client, paho_keepalive
from pipeline.operators.wire import Rejected, dead_letter, decode_alert, decode_config, encode_dead_letter
from pipeline.settings import Settings
from pipeline.topics import Kind, Topics

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # ids that are safe as one MQTT topic level
POLL_MAX_RECORDS = 200


def downlink_group(settings: Settings) -> str:
    """The consumer group: shared by bridges of one ``shared_group``, so each record goes out once."""
    b = settings.bridge
    if b.downlink_group:
        return b.downlink_group
    return f"{b.shared_group or b.client_id}-downlink"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, assigned: threading.Event) -> None:
        self._assigned = assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._assigned.clear()

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._assigned.set()


class Downlink:
    def __init__(self, settings: Settings, producer: KafkaProducer, registry: Registry) -> None:
        self._settings = settings
        self._producer = producer
        self._metrics = registry
        self._topics = Topics(settings.mqtt.topic_prefix)
        self._tracker = PubackTracker()
        self._client = make_client(settings.mqtt, f"{settings.bridge.client_id}-downlink")
        self._client.on_publish = self._tracker.on_publish
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._connected = threading.Event()
        self.assigned = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge-downlink", daemon=True)
        group_timeouts = settings.kafka.group_kwargs()
        max_poll_s = group_timeouts.get("max_poll_interval_ms", 300_000) / 1000
        # Stay well inside max.poll.interval, or the group drops us mid-batch.
        self._publish_timeout_s = min(30.0, max_poll_s / 2)

    def start(self) -> None:
        m = self._settings.mqtt
        self._client.connect_async(
            m.host, m.port, keepalive=paho_keepalive(m.keepalive_s), clean_start=True, properties=connect_properties()
        )
        self._client.loop_start()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self._client.disconnect()
        self._client.loop_stop()

    def healthy(self) -> bool:
        return self._connected.is_set() and self._thread.is_alive()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if failed(reason):
            log.warning("downlink: MQTT connect refused: %s", reason)
            return
        self._connected.set()
        log.info("downlink: MQTT connected")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("downlink: MQTT disconnected (%s); paho reconnects", reason)

    # ------------------------------------------------------------------ consumer thread

    def _make_consumer(self) -> KafkaConsumer | None:
        k = self._settings.kafka
        backoff = 0.5
        while not self._stop.is_set():
            consumer: KafkaConsumer | None = None
            try:
                consumer = KafkaConsumer(
                    **k.client_kwargs(),
                    **k.group_kwargs(),
                    group_id=downlink_group(self._settings),
                    client_id=f"{self._settings.bridge.client_id}-downlink",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    fetch_max_wait_ms=k.fetch_max_wait_ms,
                    reconnect_backoff_max_ms=2000,
                    allow_auto_create_topics=False,
                )
                consumer.subscribe([k.alerts_topic, k.config_topic], listener=_Rebalance(self.assigned))
            except (KafkaError, OSError) as exc:
                if consumer is not None:
                    consumer.close()
                log.warning("downlink: Kafka consumer not ready (%s); retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            else:
                return consumer
        return None

    def _run(self) -> None:
        consumer = self._make_consumer()
        if consumer is None:
            return
        log.info("downlink: consuming %s, %s as group %s", self._settings.kafka.alerts_topic,
                 self._settings.kafka.config_topic, downlink_group(self._settings))  # fmt: skip
        backoff = 0.5
        try:
            while not self._stop.is_set():
                try:
                    batch = consumer.poll(timeout_ms=200, max_records=POLL_MAX_RECORDS)
                except KafkaError as exc:
                    log.warning("downlink: poll failed: %s", exc)
                    self._stop.wait(backoff)
                    continue
                if batch and not self._stop.is_set():
                    if self._forward(batch):
                        backoff = 0.5
                        self._commit(consumer)
                    else:
                        for tp, records in batch.items():
                            consumer.seek(tp, records[0].offset)
                        self._metrics.inc("bridge_downlink_resends_total", help="Batches sent again.")
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, 10.0)
                self._update_lag(consumer)
        except Exception:
            log.exception("downlink: consumer loop failed")
            raise
        finally:
            consumer.close()

    def _commit(self, consumer: KafkaConsumer) -> None:
        try:
            consumer.commit()
        except KafkaError as exc:  # e.g. rebalanced meanwhile: the new owner sends them again
            log.warning("downlink: offset commit failed (%s); records may be sent again", exc)
            self._metrics.inc("bridge_downlink_commit_errors_total", help="Offset commits that failed.")

    def _forward(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> bool:
        """Publish the batch; True once every PUBACK and dead-letter ack is in."""
        mids: set[int] = set()
        dead: list[Any] = []
        for records in batch.values():
            for record in records:
                if not self._forward_one(record, mids, dead):
                    return False
        deadline = time.monotonic() + self._publish_timeout_s
        pending = mids
        while pending and not self._stop.is_set() and time.monotonic() < deadline:
            pending = self._tracker.wait(pending, min(1.0, deadline - time.monotonic()))
        if pending:
            log.warning("downlink: %d publishes not acknowledged by MQTT in time", len(pending))
            return False
        try:
            for future in dead:
                future.get(timeout=self._publish_timeout_s)
        except KafkaError as exc:
            log.warning("downlink: dead-letter send failed: %s", exc)
            return False
        return True

    def _forward_one(self, record: ConsumerRecord, mids: set[int], dead: list[Any]) -> bool:
        raw: bytes = record.value or b""
        k = self._settings.kafka
        max_bytes = self._settings.mqtt.max_payload_bytes
        if record.topic == k.alerts_topic:
            alert = decode_alert(raw, max_bytes)
            if isinstance(alert, Rejected):
                return self._dead_letter(record, alert, dead)
            targets = [(self._topics.camera(alert.site, alert.cam, Kind.ALERTS), False),
                       (self._topics.all_alerts(), False)]  # fmt: skip
            kind = "alert"
        else:
            config = decode_config(raw, max_bytes)
            if isinstance(config, Rejected):
                return self._dead_letter(record, config, dead)
            targets = [(self._topics.camera(config.site, config.cam, Kind.CONFIG), True)]
            kind = "config"
        for topic, retain in targets:
            info = self._client.publish(topic, raw, qos=1, retain=retain)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: queued
                log.warning("downlink: publish to %s refused: %s", topic, mqtt.error_string(info.rc))
                return False
            mids.add(info.mid)
        self._metrics.inc("bridge_downlink_forwarded_total", help="Kafka records published to MQTT.", kind=kind)
        return True

    def _dead_letter(self, record: ConsumerRecord, rejected: Rejected, dead: list[Any]) -> bool:
        value = encode_dead_letter(
            dead_letter(
                reason=rejected.reason,
                detail=rejected.detail,
                source="kafka",
                topic=record.topic,
                payload=record.value or b"",
                now_ms=int(time.time() * 1000),
                cap=self._settings.bridge.dead_letter_max_bytes,
            )
        )
        log.info("downlink: dead-letter %s from %s@%d: %s", rejected.reason, record.topic, record.offset,
                 rejected.detail[:200])  # fmt: skip
        try:
            dead.append(
                self._producer.send(
                    self._settings.kafka.dead_letter_topic,
                    key=record.topic.encode(),
                    value=value,
                    headers=[("reason", rejected.reason.encode())],
                )
            )
        except KafkaError as exc:
            log.warning("downlink: dead-letter send failed: %s", exc)
            return False
        self._metrics.inc("dead_letters_total", help="Records sent to the dead-letter topic.",
                          reason=rejected.reason, source="kafka")  # fmt: skip
        return True

    def _update_lag(self, consumer: KafkaConsumer) -> None:
        lag = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                lag += max(0, high - consumer.position(tp, timeout_ms=0))
            except (KafkaError, TypeError):
                continue
        self._metrics.set("bridge_downlink_lag", lag, help="Alert/config records not yet forwarded.")
