"""Kafka -> MQTT: alerts to per-camera and all-alerts topics, config as retained messages."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from kafka import KafkaProducer

from pipeline.operators.schema import Alert, decode_alert, encode_alert
from pipeline.settings import Settings
from pipeline.testing import wait_until
from pipeline.topics import Kind, Topics
from tests.bridge.bridge_helpers import SITE, bridge_settings, mqtt_peer, read_topic, running_bridge

pytestmark = pytest.mark.integration


def _decoded_alert(raw: bytes) -> Alert:
    """decode_alert of a message the test expects to be a valid alert."""
    alert = decode_alert(raw)
    assert isinstance(alert, Alert), alert
    return alert


def make_alert(cam: str, n: int) -> Alert:
    now = int(time.time() * 1000)
    return Alert(
        id=f"alert-{cam}-{n}",
        ts=now,
        site=SITE,
        cam=cam,
        rule="person-present",
        event_id=f"{cam}-{n}",
        event_ts=now - 100,
        track=n,
        label="person",
        box=(0.1, 0.2, 0.3, 0.4),
        edge_score=0.7,
        cloud_score=0.9,
        fused_score=0.82,
        verification="verified",
        model="centernet@1",
    )


def test_alerts_reach_camera_and_all_alerts_topics(make_settings: Callable[..., Settings]) -> None:
    settings = bridge_settings(make_settings)
    topics = Topics(settings.mqtt.topic_prefix)
    alerts = [make_alert(cam, n) for n in range(10) for cam in ("cam-1", "cam-2")]
    producer = KafkaProducer(**settings.kafka.client_kwargs(), acks="all")
    try:
        with (
            mqtt_peer(settings, topics.all_cameras(Kind.ALERTS), topics.all_alerts()) as sub,
            running_bridge(settings) as bridge,
        ):
            for a in alerts:
                producer.send(settings.kafka.alerts_topic, key=a.cam.encode(), value=encode_alert(a))
            producer.flush()
            assert sub.wait_for(lambda msgs: len(msgs) >= 2 * len(alerts), 20)
            all_ids = [_decoded_alert(bytes(m.payload)).id for m in sub.received(topics.all_alerts())]
            assert sorted(all_ids) == sorted(a.id for a in alerts)
            for cam in ("cam-1", "cam-2"):
                got = [m.payload for m in sub.received(topics.camera(SITE, cam, Kind.ALERTS))]
                assert got == [encode_alert(a) for a in alerts if a.cam == cam]  # per-camera order kept
            assert all(m.qos == 1 for m in sub.received())
            assert bridge.metrics.counter("bridge_downlink_forwarded_total", kind="alert") == len(alerts)
    finally:
        producer.close()


def test_config_becomes_retained_and_bad_records_are_dead_lettered(
    make_settings: Callable[..., Settings],
) -> None:
    settings = bridge_settings(make_settings)
    topics = Topics(settings.mqtt.topic_prefix)
    config = json.dumps(
        {"v": 1, "site": SITE, "cam": "cam-7", "rev": 3, "config": {"min_score": 0.5}}, separators=(",", ":")
    ).encode()
    bad_alert = b'{"v":1,"id":"x"}'
    bad_config = json.dumps({"v": 1, "site": "a/b", "cam": "cam-7", "rev": 1, "config": {}}).encode()
    producer = KafkaProducer(**settings.kafka.client_kwargs(), acks="all")
    try:
        with running_bridge(settings) as bridge:
            producer.send(settings.kafka.config_topic, key=b"cam-7", value=config)
            producer.send(settings.kafka.alerts_topic, key=b"cam-7", value=bad_alert)
            producer.send(settings.kafka.config_topic, key=b"cam-7", value=bad_config)
            producer.flush()
            dead = read_topic(settings, settings.kafka.dead_letter_topic, min_count=2, settle_s=0.3)
            assert wait_until(lambda: bridge.metrics.counter("bridge_downlink_forwarded_total", kind="config") == 1)
        # Bridge stopped: a subscriber that comes later still gets the config (retained).
        with mqtt_peer(settings, topics.camera(SITE, "cam-7", Kind.CONFIG)) as edge:
            assert edge.wait_for(lambda msgs: len(msgs) >= 1, 5)
            msg = edge.received()[0]
            assert msg.retain and msg.payload == config
        values = [json.loads(r.value) for r in dead]
        assert {(v["source"], v["topic"]) for v in values} == {
            ("kafka", settings.kafka.alerts_topic),
            ("kafka", settings.kafka.config_topic),
        }
        assert {v["reason"] for v in values} == {"missing_field", "bad_field"}
    finally:
        producer.close()
