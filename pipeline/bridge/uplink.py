"""MQTT -> Kafka: take camera events, validate, produce, and only then acknowledge.

Threads and what they own:

- paho's network thread runs ``_on_message``: it only appends to the inbox (never blocks).
- the ``bridge-uplink`` worker validates, calls ``producer.send`` (which may block on Kafka
  metadata) and publishes the per-camera acks topic every ``ack_interval_ms``.
- kafka-python's I/O thread runs the send callbacks: on success the MQTT message is acked
  (``client.ack``) and its seq is recorded for the edge; on failure it is queued for a retry.

At-least-once: a message is PUBACKed only after Kafka acknowledged its record (acks=all), the
event itself or its dead-letter record. Backpressure: Receive Maximum = ``max_inflight`` in
CONNECT, so the broker stops sending once that many messages are taken and unacked; while Kafka
is down nothing is acked and the rest waits in the broker's session queue.

Connection generations: paho message ids belong to one connection. Each (re)connect or
disconnect bumps ``_gen``; a message taken on an older connection is never acked (the broker
redelivers it on the new one, which may duplicate it in Kafka) and, if not yet sent, is dropped.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaProducer
from paho.mqtt.subscribeoptions import SubscribeOptions

from pipeline.bridge.ack_ranges import AckCollector
from pipeline.bridge.dead_letter import dead_letter_value
from pipeline.bridge.validation import validate_uplink
from pipeline.metrics import Registry
from pipeline.mqtt_client import connect_properties, failed, make_client, paho_keepalive
from pipeline.operators.schema import Acks, Event, Rejected, decode_event, encode_acks
from pipeline.settings import Settings
from pipeline.topics import Kind, Topics

log = logging.getLogger(__name__)

RETRY_BACKOFF_MIN_S = 0.2
RETRY_BACKOFF_MAX_S = 5.0


@dataclass(slots=True)
class _Taken:
    order: int  # arrival order, so retries go out oldest first
    gen: int  # connection generation the message arrived on
    mid: int
    qos: int
    topic: str
    payload: bytes
    received: float  # monotonic
    attempts: int = 0
    not_before: float = 0.0
    event: Event | None = field(default=None)


class Uplink:
    def __init__(self, settings: Settings, producer: KafkaProducer, registry: Registry) -> None:
        self._settings = settings
        self._bridge = settings.bridge
        self._producer = producer
        self._metrics = registry
        self._topics = Topics(settings.mqtt.topic_prefix)
        events = self._topics.all_cameras(Kind.EVENTS)
        group = self._bridge.shared_group
        self.subscription = f"$share/{group}/{events}" if group else events
        self.acks = AckCollector()

        self._client = make_client(settings.mqtt, self._bridge.client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # Bounded by the MQTT Receive Maximum (bridge.max_inflight): the broker sends no more
        # until we ack, and we ack only after Kafka did.
        self._inbox: deque[_Taken] = deque()
        self._retry: list[tuple[int, _Taken]] = []  # heap by arrival order
        self._order = itertools.count()
        self._gen = 0
        self._connected = False
        self._inflight = 0
        self._stopping = False
        self._failing_since: float | None = None
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
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._worker.join(timeout=10)

    def close(self) -> None:
        """After the producer was flushed: last acks to the edge, then disconnect."""
        self._publish_acks()
        with self._lock:
            left = self._inflight
        if left:
            log.info("uplink: %d messages taken but not in Kafka; the broker redelivers them", left)
        self._client.disconnect()
        self._client.loop_stop()

    def healthy(self) -> bool:
        with self._lock:
            failing = self._failing_since is not None and time.monotonic() - self._failing_since > 30
            return self.subscribed.is_set() and self._worker.is_alive() and not failing

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight

    # ------------------------------------------------------------------ paho thread

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if failed(reason):
            log.warning("uplink: MQTT connect refused: %s", reason)
            return
        with self._lock:
            self._gen += 1
            self._connected = True
            gen = self._gen
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
        with self._wake:
            self._gen += 1
            self._connected = False
            self._wake.notify_all()
        self.subscribed.clear()
        if not self._stopping:
            log.warning("uplink: MQTT disconnected (%s); paho reconnects", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.dup:
            self._metrics.inc("bridge_uplink_redelivered", help="MQTT messages the broker sent again.")
        with self._wake:
            item = _Taken(
                order=next(self._order),
                gen=self._gen,
                mid=msg.mid,
                qos=msg.qos,
                topic=msg.topic,
                payload=bytes(msg.payload),
                received=time.monotonic(),
            )
            self._inbox.append(item)
            self._inflight += 1
            self._set_inflight_gauge()
            self._wake.notify()
        self._metrics.inc("bridge_uplink_received", help="MQTT event messages taken.")

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        interval = self._bridge.ack_interval_ms / 1000
        next_acks = time.monotonic() + interval
        while True:
            item, stop = self._next_item(until=next_acks)
            if stop:
                return
            if item is not None:
                try:
                    self._send(item)
                except Exception:  # a bug must not silently stop the uplink
                    log.exception("uplink: unexpected error sending %s", item.topic)
                    self._schedule_retry(item)
            if time.monotonic() >= next_acks:
                self._publish_acks()
                next_acks = time.monotonic() + interval

    def _next_item(self, until: float) -> tuple[_Taken | None, bool]:
        """The next message to send (retries first, oldest first), or None at ``until``."""
        with self._wake:
            while not self._stopping:
                now = time.monotonic()
                wait = until - now
                if self._retry:
                    head = self._retry[0][1]
                    if head.gen != self._gen:
                        heapq.heappop(self._retry)
                        self._release(head)
                        continue
                    if head.not_before <= now:
                        heapq.heappop(self._retry)
                        return head, False
                    # Hold new messages while a retry waits: Kafka is likely down, and order matters.
                    wait = min(wait, head.not_before - now)
                elif self._inbox:
                    item = self._inbox.popleft()
                    if item.gen != self._gen and item.qos > 0:
                        self._release(item)  # its connection is gone; the broker redelivers it
                        continue
                    return item, False
                if wait <= 0:
                    return None, False
                self._wake.wait(wait)
            return None, True

    def _send(self, item: _Taken) -> None:
        now_ms = int(time.time() * 1000)
        result = validate_uplink(
            item.topic,
            item.payload,
            topics=self._topics,
            max_bytes=self._settings.mqtt.max_payload_bytes,
            max_future_skew_s=self._bridge.max_future_skew_s,
            now_ms=now_ms,
        )
        kafka = self._settings.kafka
        if isinstance(result, Event):
            item.event = result
            topic, key = kafka.events_topic, result.cam.encode()
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
            future = self._producer.send(topic, key=key, value=value, headers=headers)
        except Exception as exc:  # KafkaTimeoutError on metadata, buffer full, closed producer
            self._on_failed(item, exc)
            return
        future.add_callback(self._on_sent, item, result)
        future.add_errback(self._on_failed, item)

    def _dead_letter(self, item: _Taken, rejected: Rejected, now_ms: int) -> bytes:
        return dead_letter_value(
            reason=rejected.reason,
            detail=rejected.detail,
            source="mqtt",
            topic=item.topic,
            payload=item.payload,
            now_ms=now_ms,
            cap=self._bridge.dead_letter_max_bytes,
        )

    def _publish_acks(self) -> None:
        for (site, cam), ranges in self.acks.take().items():
            payload = encode_acks(Acks(cam=cam, ranges=ranges))
            info = self._client.publish(self._topics.camera(site, cam, Kind.ACKS), payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                # NO_CONN: paho queued it for the reconnect. Anything else is lost; the edge
                # replays those events after its ack timeout (duplicates, not loss).
                self._metrics.inc("bridge_acks_dropped", help="Ack messages paho refused to queue.")
            self._metrics.inc("bridge_acks_published", help="Ack messages published to cameras.")

    # ------------------------------------------------------------------ kafka I/O thread

    def _on_sent(self, item: _Taken, result: Event | Rejected, metadata: Any) -> None:
        with self._wake:
            acked = item.qos > 0 and item.gen == self._gen and self._connected
            if acked:
                self._client.ack(item.mid, item.qos)
            self._release(item)
            if self._failing_since is not None:
                log.info("uplink: Kafka accepts records again")
                self._failing_since = None
        if isinstance(result, Event):
            self.acks.add(result.site, result.cam, result.seq)
            self._metrics.inc("bridge_uplink_produced", help="Events Kafka acknowledged.")
        else:
            if item.event is not None:
                self.acks.add(item.event.site, item.event.cam, item.event.seq)
            self._metrics.inc(
                "dead_letters", help="Records sent to the dead-letter topic.", reason=result.reason,
                source="mqtt",
            )  # fmt: skip
        self._metrics.observe(
            "bridge_uplink_latency_seconds",
            time.monotonic() - item.received,
            help="MQTT arrival to Kafka acknowledgement.",
        )
        if not acked and item.qos > 0:
            self._metrics.inc("bridge_uplink_unacked_stale", help="In Kafka, but their MQTT connection was gone.")

    def _on_failed(self, item: _Taken, exc: BaseException) -> None:
        self._metrics.inc("bridge_uplink_produce_errors", help="Failed Kafka sends (retried).")
        self._schedule_retry(item, exc)

    def _schedule_retry(self, item: _Taken, exc: BaseException | None = None) -> None:
        with self._wake:
            if self._stopping or item.gen != self._gen:
                self._release(item)  # not acked: the broker sends it again
                return
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.warning("uplink: Kafka send failed (%s); holding MQTT acks and retrying", exc)
            item.attempts += 1
            backoff = min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_MIN_S * 2 ** min(item.attempts, 10))
            item.not_before = time.monotonic() + backoff
            heapq.heappush(self._retry, (item.order, item))
            self._wake.notify()

    # ------------------------------------------------------------------ helpers (lock held)

    def _release(self, item: _Taken) -> None:
        self._inflight -= 1
        self._set_inflight_gauge()

    def _set_inflight_gauge(self) -> None:
        self._metrics.set("bridge_uplink_inflight", self._inflight, help="MQTT messages taken, not yet acked by Kafka.")
