"""Alerts for the history tests, and Kafka I/O."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence

import cv2
import numpy as np
from kafka import KafkaConsumer, KafkaProducer

from pipeline.operators.schema import Alert, Event, encode_alert, encode_event
from pipeline.settings import Settings


def make_alert(n: int, *, site: str = "site-a", cam: str = "cam-1", rule: str = "person-present",
               ts: int | None = None, track: int | None = None) -> Alert:  # fmt: skip
    ts = ts if ts is not None else int(time.time() * 1000)
    return Alert(
        id=f"{rule}:{site}:{cam}:{n}", ts=ts, site=site, cam=cam, rule=rule, event_id=f"ev-{cam}-{n}",
        event_ts=ts - 150, track=track if track is not None else n, label="person", box=(0.1, 0.2, 0.3, 0.6),
        edge_score=0.7, cloud_score=0.9, fused_score=0.82, verification="verified", model="centernet@1",
    )  # fmt: skip


def crop_jpeg(width: int = 64, height: int = 128, noise: bool = False) -> bytes:
    rng = np.random.default_rng(7)
    img = (
        rng.integers(0, 255, (height, width, 3), dtype=np.uint8) if noise else np.full((height, width, 3), 90, np.uint8)
    )
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return bytes(buf.tobytes())


def started_event(alert: Alert, jpeg: bytes) -> Event:
    return Event(
        id=f"start-{alert.cam}-{alert.track}", site=alert.site, cam=alert.cam, ts=alert.event_ts - 500, seq=alert.track,
        type="track_started", track=alert.track, label="person", score=0.7, box=alert.box, det="test@1",
        crop=base64.b64encode(jpeg).decode(),
    )  # fmt: skip


def produce(
    settings: Settings, alerts: Sequence[Alert] = (), raw: Sequence[bytes] = (), events: Sequence[Event] = ()
) -> None:
    producer = KafkaProducer(**settings.kafka.client_kwargs(), acks="all", linger_ms=5)
    for a in alerts:
        producer.send(settings.kafka.alerts_topic, key=a.cam.encode(), value=encode_alert(a))
    for value in raw:
        producer.send(settings.kafka.alerts_topic, key=b"cam-x", value=value)
    for e in events:
        producer.send(settings.kafka.events_topic, key=e.cam.encode(), value=encode_event(e))
    producer.flush(30)
    producer.close(5)


def read_all(settings: Settings, topic: str, timeout_s: float = 5.0) -> list[bytes]:
    consumer = KafkaConsumer(topic, **settings.kafka.client_kwargs(), auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=int(timeout_s * 1000))  # fmt: skip
    try:
        return [m.value for m in consumer]
    finally:
        consumer.close()
