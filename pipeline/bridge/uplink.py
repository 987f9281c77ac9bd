"""MQTT -> Kafka: take camera events, validate, produce, and only then acknowledge.

Threads and what they own:

- paho's network thread runs ``InFlight.add`` (the lean path's ``on_event``, or ``_on_message``):
  it only appends to the inbox (never blocks), and wakes the worker only when the worker sleeps.
- the ``bridge-uplink`` worker takes the whole inbox under one lock, then validates and calls
  ``producer.send`` (which may block on Kafka metadata) for each message outside the lock; every
  ``ack_interval_ms`` it publishes the per-camera acks topic and flushes the counters.
- kafka-python's I/O thread runs the send callbacks: on success the MQTT message is acked
  (``client.ack``) and its seq is recorded for the edge; on failure it is queued for a retry.

At-least-once: a message is PUBACKed only after Kafka acknowledged its record (acks=all), the
event itself or its dead-letter record. Backpressure: Receive Maximum = ``max_inflight`` in
CONNECT, so the broker stops sending once that many messages are taken and unacked; while Kafka
is down nothing is acked and the rest waits in the broker's session queue. A broker that sends
more than that anyway (Mosquitto 2.0.11 does, under load) finds the socket unread until the
count is back under the window (``_read_paused``, :mod:`pipeline.compat.paho_uplink`).

What the three threads share (the inbox, the retry heap, connection generations, the counts) is
:class:`~pipeline.bridge.uplink_inflight.InFlight`, under its one lock; this module wires paho and
kafka-python to it, turns each message into its Kafka record and publishes the acks and counters.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaProducer
from paho.mqtt.subscribeoptions import SubscribeOptions

from pipeline.bridge.ack_ranges import AckCollector
from pipeline.bridge.key_partitions import KeyPartitions
from pipeline.bridge.uplink_inflight import InFlight, Taken
from pipeline.bridge.validation import validate_uplink
from pipeline.compat.paho_uplink import configure_uplink, uplink_client_class
from pipeline.metrics import Registry
from pipeline.mqtt_client import connect_properties, failed, make_client, paho_keepalive
from pipeline.operators.rules import camera_key
from pipeline.operators.schema import Acks, Event, Rejected, decode_event, encode_acks
from pipeline.operators.wire import dead_letter, encode_dead_letter
from pipeline.settings import Settings
from pipeline.topics import Kind, Topics

log = logging.getLogger(__name__)


class Uplink:
    def __init__(self, settings: Settings, producer: KafkaProducer, registry: Registry) -> None:
        self._settings = settings
        self._bridge = settings.bridge
        self._producer = producer
        self._event_partitions = KeyPartitions(producer, settings.kafka.events_topic)
        self._metrics = registry
        self._topics = Topics(settings.mqtt.topic_prefix)
        events = self._topics.all_cameras(Kind.EVENTS)
        group = self._bridge.shared_group
        self.subscription = f"$share/{group}/{events}" if group else events
        self.acks = AckCollector()
        self._in_flight = InFlight()

        self._client = make_client(settings.mqtt, self._bridge.client_id, manual_ack=True,
                                   client_class=uplink_client_class())  # fmt: skip
        configure_uplink(self._client, on_event=self._in_flight.add, read_paused=self._read_paused)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message  # what the lean path leaves to paho's

        self.subscribed = threading.Event()
        self._worker = threading.Thread(target=self._run, name="bridge-uplink", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        m = self._settings.mqtt
        persistent = self.persistent_session
        self._client.connect_async(
            m.host,
            m.port,
            keepalive=paho_keepalive(m.keepalive_s),
            clean_start=not persistent,
            properties=connect_properties(
                session_expiry_s=m.session_expiry_s if persistent else None,
                receive_maximum=self._bridge.max_inflight,
            ),
        )
        self._client.loop_start()
        self._worker.start()

    @property
    def persistent_session(self) -> bool:
        """See ``BridgeSettings.persistent_session``: by default only without a shared group."""
        configured = self._bridge.persistent_session
        return configured if configured is not None else not self._bridge.shared_group

    def stop_taking(self) -> None:
        """Stop sending new records to Kafka; what is already sent still gets acked."""
        self._in_flight.stop()
        self._worker.join(timeout=10)

    def close(self) -> None:
        """After the producer was flushed: last acks to the edge, then disconnect."""
        self._publish_acks()
        self.flush_metrics()
        left = self._in_flight.inflight
        if left:
            log.info("uplink: %d messages taken but not in Kafka; the broker redelivers them", left)
        self._client.disconnect()
        self._client.loop_stop()

    def healthy(self) -> bool:
        failing = self._in_flight.failing_for_more_than(30)
        return self.subscribed.is_set() and self._worker.is_alive() and not failing

    @property
    def inflight(self) -> int:
        return self._in_flight.inflight

    # ------------------------------------------------------------------ paho thread

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if failed(reason):
            log.warning("uplink: MQTT connect refused: %s", reason)
            return
        gen = self._in_flight.connected()
        log.info(
            "uplink: MQTT connected (session_present=%s, gen=%d), subscribing %s",
            flags.session_present,
            gen,
            self.subscription,
        )
        client.subscribe(self.subscription, options=SubscribeOptions(qos=1))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(failed(r) for r in reasons):
            log.error("uplink: subscription %s refused: %s", self.subscription, reasons)
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._in_flight.disconnected()
        self.subscribed.clear()
        if not self._in_flight.stopping:
            log.warning("uplink: MQTT disconnected (%s); paho reconnects", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._in_flight.add(msg.mid, msg.qos, msg.dup, msg.topic, bytes(msg.payload))

    def _read_paused(self) -> bool:
        """Above the Receive Maximum on this connection: read no more (paho's thread, no lock:
        a stale read only shifts a pause by one loop)."""
        return self._in_flight.gen_inflight > self._bridge.max_inflight

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        interval = self._bridge.ack_interval_ms / 1000
        next_acks = time.monotonic() + interval
        while True:
            batch, stop = self._in_flight.take(until=next_acks)
            if stop:
                return
            if batch:
                self._send_batch(batch)
            if time.monotonic() >= next_acks:
                self._publish_acks()
                self.flush_metrics()
                next_acks = time.monotonic() + interval

    def _send_batch(self, batch: list[Taken]) -> None:
        now_ms = int(time.time() * 1000)
        taken = self._in_flight
        retries = taken.retries  # only this thread takes from the heap: more means a send failed
        for i, item in enumerate(batch):
            if taken.stopping or taken.retries > retries or (item.gen != taken.gen and item.qos > 0):
                # Stopping, or a send failed (hold the rest behind its retry, in order), or the
                # connection changed while this batch went out: back to the inbox, where
                # InFlight.take sorts it out as if it had never been taken.
                taken.requeue(batch[i:])
                return
            try:
                self._send(item, now_ms)
            except Exception:  # a bug must not silently stop the uplink
                log.exception("uplink: unexpected error sending %s", item.topic)
                taken.retry(item)

    def _send(self, item: Taken, now_ms: int) -> None:
        try:
            result: Event | Rejected = validate_uplink(
                item.topic,
                item.payload,
                topics=self._topics,
                max_bytes=self._settings.mqtt.max_payload_bytes,
                max_future_skew_s=self._bridge.max_future_skew_s,
                now_ms=now_ms,
            )
        except Exception as exc:  # a decoder bug: dead-letter this record, never retry it
            # Retrying would hold every newer message behind it for ever (boofuzz found one such
            # payload: a 400-digit score overflowed math.isfinite).
            log.exception("uplink: validating a message from %s raised", item.topic)
            result = Rejected("validation_error", f"{exc!r}"[:300])
        kafka = self._settings.kafka
        partition: int | None = None  # None: kafka-python's partitioner decides
        if isinstance(result, Event):
            item.event = result
            # keyed by site and camera: ids repeat across sites (every node's first camera is cam-1),
            # so keyed by the id alone every site's cam-1 shared one partition
            topic, key = kafka.events_topic, camera_key(result.site, result.cam).encode()
            partition = self._event_partitions.get(key)
            value = item.payload
            headers = [("event_id", result.id.encode()), ("site", result.site.encode())]
        else:
            if result.reason == "future_ts":
                # Its site/cam match the topic and it decodes: the dead-letter record is this
                # event's durable outcome, so its seq is acknowledged to the edge below. Otherwise
                # a node with a skewed clock would replay it until its outbox age cap.
                decoded = decode_event(item.payload, self._settings.mqtt.max_payload_bytes)
                item.event = decoded if isinstance(decoded, Event) else None
            topic, key = kafka.dead_letter_topic, item.topic.encode()
            value = self._dead_letter(item, result, now_ms)
            headers = [("reason", result.reason.encode())]
            if item.attempts == 0:
                log.info("uplink: dead-letter %s from %s: %s", result.reason, item.topic, result.detail[:200])
        try:
            future = self._producer.send(topic, key=key, value=value, headers=headers, partition=partition)
        except Exception as exc:  # KafkaTimeoutError on metadata, buffer full, closed producer
            self._on_failed(item, exc)
            return
        future.add_callback(self._on_sent, item, result)
        future.add_errback(self._on_failed, item)

    def _dead_letter(self, item: Taken, rejected: Rejected, now_ms: int) -> bytes:
        return encode_dead_letter(
            dead_letter(
                reason=rejected.reason,
                detail=rejected.detail,
                source="mqtt",
                topic=item.topic,
                payload=item.payload,
                now_ms=now_ms,
                cap=self._bridge.dead_letter_max_bytes,
            )
        )

    def _publish_acks(self) -> None:
        for (site, cam), ranges in self.acks.take().items():
            payload = encode_acks(Acks(cam=cam, ranges=ranges))
            info = self._client.publish(self._topics.camera(site, cam, Kind.ACKS), payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                # NO_CONN: paho queued it for the reconnect. Anything else is lost; the edge
                # replays those events after its ack timeout (duplicates, not loss).
                self._metrics.inc("bridge_acks_dropped_total", help="Ack messages paho refused to queue.")
            self._metrics.inc("bridge_acks_published_total", help="Ack messages published to cameras.")

    def flush_metrics(self) -> None:
        """Move the counts since the last flush into the registry (worker thread, and close)."""
        c, inflight = self._in_flight.take_counts()
        m = self._metrics
        m.set("bridge_uplink_inflight", inflight, help="MQTT messages taken, not yet acked by Kafka.")
        if c.received:
            m.inc("bridge_uplink_received_total", c.received, help="MQTT event messages taken.")
        if c.redelivered:
            m.inc("bridge_uplink_redelivered_total", c.redelivered, help="MQTT messages the broker sent again.")
        if c.produced:
            m.inc("bridge_uplink_produced_total", c.produced, help="Events Kafka acknowledged.")
        for reason, n in c.dead_letters.items():
            m.inc("dead_letters_total", n, help="Records sent to the dead-letter topic.", reason=reason, source="mqtt")
        if c.unacked_stale:
            m.inc("bridge_uplink_unacked_stale_total", c.unacked_stale,
                  help="In Kafka, but their MQTT connection was gone.")  # fmt: skip
        if c.produce_errors:
            m.inc("bridge_uplink_produce_errors_total", c.produce_errors, help="Failed Kafka sends (retried).")
        for seconds in c.latencies:
            m.observe("bridge_uplink_latency_seconds", seconds, help="MQTT arrival to Kafka acknowledgement.")

    # ------------------------------------------------------------------ kafka I/O thread

    def _on_sent(self, item: Taken, result: Event | Rejected, metadata: Any) -> None:
        event = result if isinstance(result, Event) else item.event
        self._in_flight.settle(item, result, self._client.ack)
        if event is not None:
            self.acks.add(event.site, event.cam, event.seq)

    def _on_failed(self, item: Taken, exc: BaseException) -> None:
        self._in_flight.failed(item, exc)
