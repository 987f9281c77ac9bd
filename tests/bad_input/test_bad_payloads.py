"""Bad input at every door, on real brokers. What tests/bridge and tests/cloud_stage already cover
(not JSON, unknown version, too large, camera/topic mismatch, future timestamps; not-JSON and
missing-field records in Kafka) is not repeated here."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline.chaos.rig import ChaosEnv, read_events
from pipeline.chaos.stream import ScriptedStream
from pipeline.operators.schema import encode_event
from pipeline.settings import Settings
from pipeline.testing import wait_until
from pipeline.topics import Kind, Topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _dead_letters(s: Settings, min_count: int) -> list[dict[str, object]]:
    consumer = KafkaConsumer(**s.kafka.client_kwargs(), enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(s.kafka.dead_letter_topic, p) for p in range(s.kafka.partitions)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[dict[str, object]] = []
        idle, deadline = 0, time.monotonic() + 90
        while (idle < 3 or len(out) < min_count) and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000)
            idle = 0 if batch else idle + 1
            out += [json.loads(r.value) for rs in batch.values() for r in rs]
        return out
    finally:
        consumer.close()


def test_bad_mqtt_payloads_are_dead_lettered_and_a_duplicate_makes_one_alert(chaos_env: ChaosEnv) -> None:
    stream = ScriptedStream(1, site="site-a", cams=("cam-1",))
    mqtt = chaos_env.mqtt_broker()
    s = chaos_env.settings(stream, mqtt, chaos_env.kafka_broker())
    chaos_env.bridge(s)
    chaos_env.cloud(s)
    sub = chaos_env.subscriber(s)
    good = stream.event(0)
    obj = json.loads(encode_event(good))

    def variant(**change: object) -> bytes:
        return json.dumps({**obj, **change}).encode()

    missing = {k: v for k, v in obj.items() if k != "score"}
    bad = {
        "not_utf8": b'{"v":1,"id":"\xff\xfe"}',
        "not_object": b"[1, 2, 3]",
        "missing_field": json.dumps(missing).encode(),
        "unknown_field": variant(extra="x"),
        "nan": encode_event(good).replace(b'"score":0.9', b'"score":NaN'),
        "inf": encode_event(good).replace(b'"score":0.9', b'"score":1e999'),
        "negative_box": variant(box=[-0.1, 0.2, 0.3, 0.4]),
        "box_out_of_order": variant(box=[0.5, 0.5, 0.1, 0.1]),
        "wrong_type": variant(track="7"),
        "empty": b"",
    }
    expected_reason = {"not_utf8": "not_utf8", "not_object": "not_object", "missing_field": "missing_field",
                       "unknown_field": "unknown_field", "nan": "not_json", "inf": "bad_field",
                       "negative_box": "bad_field", "box_out_of_order": "bad_field", "wrong_type": "bad_field",
                       "empty": "not_json"}  # fmt: skip
    topic = Topics(s.mqtt.topic_prefix).camera("site-a", "cam-1", Kind.EVENTS)
    import paho.mqtt.publish as single

    for payload in [*bad.values(), encode_event(good), encode_event(good)]:  # the good one twice: same id
        single.single(topic, payload, qos=1, hostname=mqtt.host, port=mqtt.port)
    # records that are not ours, produced straight into the events topic: the worker dead-letters them
    producer = KafkaProducer(**s.kafka.client_kwargs(), acks="all")
    for raw in (b"\x00\x01\x02binary", b'{"hello":"world"}', b'{"v":1,"id":"x","cam":"cam-1"}'):
        producer.send(s.kafka.events_topic, key=b"cam-1", value=raw)
    producer.flush(10)
    producer.close(5)

    dead = _dead_letters(s, len(bad) + 3)
    mqtt_reasons = Counter(str(d["reason"]) for d in dead if d["source"] == "mqtt")
    kafka_reasons = Counter(str(d["reason"]) for d in dead if d["source"] == "kafka")
    assert mqtt_reasons == Counter(expected_reason.values()), mqtt_reasons
    assert kafka_reasons == Counter({"not_json": 1, "unknown_version": 1, "missing_field": 1}), kafka_reasons
    assert all(d["topic"] == topic for d in dead if d["source"] == "mqtt")
    assert read_events(s).counts[good.id] == 2, "the duplicate reached Kafka (at-least-once) ..."
    expected = set(stream.expected_alerts())
    assert wait_until(lambda: expected <= set(sub.stats.unique), 90)
    sub.wait_quiet(3.0, 20)
    assert set(sub.stats.unique) == expected and sub.stats.duplicates == 0, "... and made one alert"
