"""``pipeline history``'s loop: the alerts topic (and the crops of the events topic) into SQL.

At least once, idempotent by alert id: a kafka-python consumer in group ``history.group`` (auto
commit off) polls a batch, writes it in one database transaction, waits for Kafka to take the
dead-letter records of the bad ones, and only then commits the batch's offsets. A crash at any
point before that commit redelivers the batch, and the alert id's primary key stores it once.
If the database refuses a batch (down, disk full) the partitions are sought back to the batch's
first offsets and the batch is tried again with backoff; nothing is skipped.

Bad alert records (the shared codec's ``Rejected(reason)``) go to the dead-letter topic with
source ``kafka`` (:func:`pipeline.bridge.dead_letter.dead_letter_value`) and are counted in
``dead_letters{reason,source}``. From the events topic only ``track_started`` records carrying
a crop are read (a byte test first, so the other ~95 % are not even decoded); those are the
bridge's and the cloud's to dead-letter, here a bad one is only counted.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from pipeline.bridge.dead_letter import dead_letter_value
from pipeline.history.crops import prepare_crop
from pipeline.history.store import HistoryStore, StoredAlert, TrackCrop
from pipeline.metrics import Registry
from pipeline.operators.schema import Rejected, decode_alert, decode_event
from pipeline.settings import Settings

log = logging.getLogger(__name__)
DAY_MS = 24 * 3600 * 1000


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assigned: Any) -> None:
        self._on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        return

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._on_assigned(assigned)


@dataclass
class Batch:
    alerts: list[StoredAlert] = field(default_factory=list)
    crops: list[TrackCrop] = field(default_factory=list)
    dead: list[Any] = field(default_factory=list)  # futures of dead-letter sends


class HistoryConsumer:
    def __init__(self, settings: Settings, store: HistoryStore, metrics: Registry) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.ready = threading.Event()
        self._producer: KafkaProducer | None = None
        self._next_retention = 0.0
        self._backoff = 0.5

    # ------------------------------------------------------------------ lifecycle

    def _connect(self, stop: threading.Event) -> tuple[KafkaConsumer, KafkaProducer] | None:
        k, h = self.settings.kafka, self.settings.history
        topics = [k.alerts_topic, *([k.events_topic] if h.crops else [])]
        backoff = 0.5
        while not stop.is_set():
            consumer: KafkaConsumer | None = None
            try:
                producer = KafkaProducer(**k.client_kwargs(), acks="all", retries=5, linger_ms=5)
                consumer = KafkaConsumer(
                    **k.client_kwargs(), **k.group_kwargs(), group_id=h.group, client_id=f"{h.group}-history",
                    enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=k.fetch_max_wait_ms,
                    allow_auto_create_topics=False, reconnect_backoff_max_ms=2000,
                )  # fmt: skip
                consumer.subscribe(topics, listener=_Assigned(self._on_assigned))
            except (KafkaError, OSError) as exc:
                if consumer is not None:
                    consumer.close()
                log.warning("history: Kafka not ready (%s); retrying in %.1f s", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            else:
                log.info("history: consuming %s as group %s into %s %s", ", ".join(topics), h.group,
                         self.store.dialect, self.store.where)  # fmt: skip
                return consumer, producer
        return None

    def _on_assigned(self, assigned: Any) -> None:
        if not self.ready.is_set():
            log.info("history store ready (%d partitions)", len(assigned))
        self.ready.set()

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set (the caller's thread)."""
        clients = self._connect(stop)
        if clients is None:
            return
        consumer, self._producer = clients
        try:
            while not stop.is_set():
                self._retention()
                try:
                    polled = consumer.poll(timeout_ms=500, max_records=self.settings.history.batch_max)
                except KafkaError as exc:
                    log.warning("history: poll failed: %s", exc)
                    stop.wait(1.0)
                    continue
                if polled and not stop.is_set():
                    if self._store(polled):
                        self._backoff = 0.5
                        self._commit(consumer)
                    else:
                        for tp, records in polled.items():
                            consumer.seek(tp, records[0].offset)
                        self.metrics.inc("history_batch_retries_total", help="Batches written again after a failure.")
                        stop.wait(self._backoff)
                        self._backoff = min(self._backoff * 2, 10.0)
        finally:
            consumer.close()
            self._producer.close(timeout=5)

    def _commit(self, consumer: KafkaConsumer) -> None:
        try:
            consumer.commit()
        except KafkaError as exc:  # rebalanced meanwhile: the new owner writes them again (idempotent)
            log.warning("history: offset commit failed (%s); the batch may be written again", exc)
            self.metrics.inc("history_commit_errors_total", help="Offset commits that failed.")

    # ------------------------------------------------------------------ one batch

    def _store(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> bool:
        """Write one polled batch; True once it is in the database and its dead letters in Kafka."""
        batch = Batch()
        now_ms = int(time.time() * 1000)
        for records in polled.values():
            for record in records:
                if record.topic == self.settings.kafka.alerts_topic:
                    self._take_alert(record, batch, now_ms)
                else:
                    self._take_crop(record, batch)
        try:
            result = self.store.write(batch.alerts, batch.crops)
        except Exception as exc:  # sqlite3.Error, psycopg.Error: the database, not the batch
            log.warning("history: write of %d alerts failed (%s); retrying", len(batch.alerts), exc)
            self.metrics.inc("history_write_errors_total", help="Batches the database refused.")
            return False
        try:
            for future in batch.dead:
                future.get(timeout=30)
        except KafkaError as exc:
            log.warning("history: dead-letter send failed (%s); retrying the batch", exc)
            return False
        m = self.metrics
        m.inc("history_alerts_stored_total", result.inserted, help="Alerts written to the history.")
        m.inc("history_alerts_duplicate_total", result.duplicates, help="Alerts already stored (redelivered).")
        m.inc("history_crops_stored_total", result.crops, help="Track crops written to the history.")
        if batch.alerts:
            log.debug("history: %d alerts stored, %d duplicates, %d crops", result.inserted, result.duplicates,
                      result.crops)  # fmt: skip
        return True

    def _take_alert(self, record: ConsumerRecord, batch: Batch, now_ms: int) -> None:
        raw: bytes = record.value or b""
        alert = decode_alert(raw, self.settings.mqtt.max_payload_bytes)
        if isinstance(alert, Rejected):
            self._dead_letter(record, alert, batch)
            return
        batch.alerts.append(StoredAlert(alert, now_ms, record.topic, record.partition, record.offset))

    def _take_crop(self, record: ConsumerRecord, batch: Batch) -> None:
        raw: bytes = record.value or b""
        if b'"crop":' not in raw or b'"track_started"' not in raw:
            return
        event = decode_event(raw, self.settings.mqtt.max_payload_bytes)
        if isinstance(event, Rejected):
            self.metrics.inc("history_events_skipped_total", help="Event records with a crop that did not decode.",
                             reason=event.reason)  # fmt: skip
            return
        if event.type != "track_started" or event.crop is None:
            return
        h = self.settings.history
        jpeg = prepare_crop(event.crop, max_bytes=h.crop_max_bytes, blur=h.crop_blur)
        if isinstance(jpeg, str):
            self.metrics.inc("history_crops_dropped_total", help="Crops not stored.", reason=jpeg)
            return
        batch.crops.append(TrackCrop(event.site, event.cam, event.track, event.id, event.ts, jpeg))

    def _dead_letter(self, record: ConsumerRecord, rejected: Rejected, batch: Batch) -> None:
        assert self._producer is not None
        value = dead_letter_value(
            reason=rejected.reason, detail=rejected.detail, source="kafka", topic=record.topic,
            payload=record.value or b"", now_ms=int(time.time() * 1000),
            cap=self.settings.bridge.dead_letter_max_bytes,
        )  # fmt: skip
        log.info("history: dead-letter %s from %s@%d: %s", rejected.reason, record.topic, record.offset,
                 rejected.detail[:200])  # fmt: skip
        batch.dead.append(
            self._producer.send(
                self.settings.kafka.dead_letter_topic,
                key=record.topic.encode(),
                value=value,
                headers=[("reason", rejected.reason.encode())],
            )
        )
        self.metrics.inc("dead_letters", help="Records sent to the dead-letter topic.", reason=rejected.reason,
                         source="kafka")  # fmt: skip

    # ------------------------------------------------------------------ retention

    def _retention(self) -> None:
        h = self.settings.history
        if time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + h.retention_interval_s
        cutoff = int(time.time() * 1000 - h.retention_days * DAY_MS)
        try:
            alerts, crops = self.store.delete_older_than(cutoff)
        except Exception as exc:
            log.warning("history: retention delete failed (%s); next try in %.0f s", exc, h.retention_interval_s)
            return
        if alerts or crops:
            log.info("history: retention deleted %d alerts and %d crops older than %.1f days", alerts, crops,
                     h.retention_days)  # fmt: skip
        self.metrics.inc("history_retention_deleted_total", alerts, help="Alerts deleted by retention.")
