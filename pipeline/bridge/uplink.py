"""MQTT -> Kafka: take camera events, validate, produce, and only then acknowledge.

Threads and what they own:

- paho's network thread runs ``_on_message``: it only appends to the inbox (never blocks), and
  wakes the worker only when the worker sleeps.
- the ``bridge-uplink`` worker takes the whole inbox under one lock, then validates and calls
  ``producer.send`` (which may block on Kafka metadata) for each message outside the lock; every
  ``ack_interval_ms`` it publishes the per-camera acks topic and flushes the counters.
- kafka-python's I/O thread runs the send callbacks: on success the MQTT message is acked
  (``client.ack``) and its seq is recorded for the edge; on failure it is queued for a retry.

Per-message work is counted in plain fields under the uplink's own lock (taken anyway) and
flushed to the metrics registry with the acks, not per message: under load the registry's lock,
label sorting and sorted-sample inserts cost as much as the hand-off itself (profile in
benchmarks/RESULTS.md).

At-least-once: a message is PUBACKed only after Kafka acknowledged its record (acks=all), the
event itself or its dead-letter record. Backpressure: Receive Maximum = ``max_inflight`` in
CONNECT, so the broker stops sending once that many messages are taken and unacked; while Kafka
is down nothing is acked and the rest waits in the broker's session queue. A broker that sends
more than that anyway (Mosquitto 2.0.11 does, under load) finds the socket unread until the
count is back under the window (``_read_paused``, :mod:`pipeline.compat.paho_uplink`).

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
from pipeline.bridge.key_partitions import KeyPartitions
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


# At most this many latency samples go to the registry per flush (the newest ones): enough for
# its quantiles, and a flood does not turn every flush into thousands of sorted inserts.
LATENCY_SAMPLES_PER_FLUSH = 200


@dataclass(slots=True)
class _Counts:
    """What happened since the last flush to the registry (guarded by ``Uplink._lock``)."""

    received: int = 0
    redelivered: int = 0
    produced: int = 0
    unacked_stale: int = 0
    produce_errors: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # by reason
    latencies: list[float] = field(default_factory=list)  # ring of LATENCY_SAMPLES_PER_FLUSH
    latencies_seen: int = 0

    def latency(self, seconds: float) -> None:
        if len(self.latencies) < LATENCY_SAMPLES_PER_FLUSH:
            self.latencies.append(seconds)
        else:
            self.latencies[self.latencies_seen % LATENCY_SAMPLES_PER_FLUSH] = seconds
        self.latencies_seen += 1


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

        self._client = make_client(settings.mqtt, self._bridge.client_id, manual_ack=True,
                                   client_class=uplink_client_class())  # fmt: skip
        configure_uplink(self._client, on_event=self._on_event, read_paused=self._read_paused)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message  # what the lean path leaves to paho's

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # Bounded by the MQTT Receive Maximum (bridge.max_inflight): the broker sends no more
        # until we ack, and we ack only after Kafka did; where a broker overshoots it, reading
        # pauses (_read_paused). Counted: bridge_uplink_inflight.
        self._inbox: deque[_Taken] = deque()
        self._retry: list[tuple[int, _Taken]] = []  # heap by arrival order
        self._order = itertools.count()
        self._gen = 0
        self._connected = False
        self._inflight = 0
        self._gen_inflight = 0  # of _inflight, those taken on the current connection
        self._stopping = False
        self._worker_idle = False  # the worker waits on _wake: a new message must notify it
        self._counts = _Counts()
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
        self.flush_metrics()
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
            self._gen_inflight = 0
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
            self._gen_inflight = 0
            self._connected = False
            self._wake.notify_all()
        self.subscribed.clear()
        if not self._stopping:
            log.warning("uplink: MQTT disconnected (%s); paho reconnects", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_event(msg.mid, msg.qos, msg.dup, msg.topic, bytes(msg.payload))

    def _on_event(self, mid: int, qos: int, dup: bool, topic: str, payload: bytes) -> None:
        item = _Taken(order=next(self._order), gen=0, mid=mid, qos=qos, topic=topic, payload=payload,
                      received=time.monotonic())  # fmt: skip
        with self._lock:
            item.gen = self._gen
            self._inbox.append(item)
            self._inflight += 1
            self._gen_inflight += 1
            self._counts.received += 1
            if dup:
                self._counts.redelivered += 1
            # A busy worker takes this message with the rest of the inbox when it comes back;
            # waking it per message cost a futex wake and a thread switch each.
            if self._worker_idle:
                self._wake.notify()

    def _read_paused(self) -> bool:
        """Above the Receive Maximum on this connection: read no more (paho's thread, no lock:
        a stale read only shifts a pause by one loop)."""
        return self._gen_inflight > self._bridge.max_inflight

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        interval = self._bridge.ack_interval_ms / 1000
        next_acks = time.monotonic() + interval
        while True:
            batch, stop = self._take(until=next_acks)
            if stop:
                return
            if batch:
                self._send_batch(batch)
            if time.monotonic() >= next_acks:
                self._publish_acks()
                self.flush_metrics()
                next_acks = time.monotonic() + interval

    def _take(self, until: float) -> tuple[list[_Taken], bool]:
        """What to send next: the oldest due retry, or else the whole inbox taken under one lock;
        an empty list at ``until``; True once stopping."""
        with self._wake:
            while not self._stopping:
                now = time.monotonic()
                wait = until - now
                if self._retry:
                    # Retries go one at a time (they are rare: Kafka failing), oldest first.
                    head = self._retry[0][1]
                    if head.gen != self._gen:
                        heapq.heappop(self._retry)
                        self._release(head)
                        continue
                    if head.not_before <= now:
                        heapq.heappop(self._retry)
                        return [head], False
                    # Hold new messages while a retry waits: Kafka is likely down, and order matters.
                    wait = min(wait, head.not_before - now)
                elif self._inbox:
                    batch: list[_Taken] = []
                    for item in self._inbox:
                        if item.gen != self._gen and item.qos > 0:
                            self._release(item)  # its connection is gone; the broker redelivers it
                        else:
                            batch.append(item)
                    self._inbox.clear()
                    if batch:
                        return batch, False
                    continue
                if wait <= 0:
                    return [], False
                self._wait(wait)
            return [], True

    def _wait(self, timeout: float) -> None:
        """Sleep on ``_wake`` (lock held) until notified or ``timeout``."""
        self._worker_idle = True
        try:
            self._wake.wait(timeout)
        finally:
            self._worker_idle = False

    def _send_batch(self, batch: list[_Taken]) -> None:
        now_ms = int(time.time() * 1000)
        retries = len(self._retry)  # only this thread takes from the heap: more means a send failed
        for i, item in enumerate(batch):
            if self._stopping or len(self._retry) > retries or (item.gen != self._gen and item.qos > 0):
                # Stopping, or a send failed (hold the rest behind its retry, in order), or the
                # connection changed while this batch went out: back to the inbox, where _take
                # sorts it out as if it had never been taken.
                with self._lock:
                    self._inbox.extendleft(reversed(batch[i:]))
                return
            try:
                self._send(item, now_ms)
            except Exception:  # a bug must not silently stop the uplink
                log.exception("uplink: unexpected error sending %s", item.topic)
                self._schedule_retry(item)

    def _send(self, item: _Taken, now_ms: int) -> None:
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

    def _dead_letter(self, item: _Taken, rejected: Rejected, now_ms: int) -> bytes:
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
        with self._lock:
            c, self._counts = self._counts, _Counts()
            inflight = self._inflight
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

    def _on_sent(self, item: _Taken, result: Event | Rejected, metadata: Any) -> None:
        event = result if isinstance(result, Event) else item.event
        with self._lock:
            acked = item.qos > 0 and item.gen == self._gen and self._connected
            if acked:
                self._client.ack(item.mid, item.qos)
            self._release(item)
            if self._failing_since is not None:
                log.info("uplink: Kafka accepts records again")
                self._failing_since = None
            c = self._counts
            if isinstance(result, Event):
                c.produced += 1
            else:
                c.dead_letters[result.reason] = c.dead_letters.get(result.reason, 0) + 1
            if not acked and item.qos > 0:
                c.unacked_stale += 1
            c.latency(time.monotonic() - item.received)
        if event is not None:
            self.acks.add(event.site, event.cam, event.seq)

    def _on_failed(self, item: _Taken, exc: BaseException) -> None:
        with self._lock:
            self._counts.produce_errors += 1
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
        if item.gen == self._gen:
            self._gen_inflight -= 1
