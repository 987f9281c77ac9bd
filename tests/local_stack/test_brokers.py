"""Mosquitto and Tansu started by the shared fixtures: they carry real traffic and survive restarts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from pipeline.errors import ConfigError, LocalStackError
from pipeline.local_stack.kafka_topics import ensure_topics, project_topics
from pipeline.local_stack.mosquitto import MosquittoProcess, write_password_file
from pipeline.local_stack.ports import free_port, port_open
from pipeline.local_stack.tansu import TansuProcess
from pipeline.settings import Settings
from pipeline.testing import wait_until

pytestmark = pytest.mark.integration


def _client(broker: MosquittoProcess, client_id: str = "") -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    return client


def _collect(client: mqtt.Client, topic: str, qos: int = 1) -> tuple[list[bytes | bytearray], threading.Event]:
    got: list[bytes | bytearray] = []
    subscribed = threading.Event()
    client.on_message = lambda c, u, msg: got.append(msg.payload)
    client.on_subscribe = lambda *a: subscribed.set()
    client.subscribe(topic, qos=qos)
    assert subscribed.wait(5)
    return got, subscribed


def test_mosquitto_qos1_round_trip(mqtt_broker: MosquittoProcess, make_settings: Callable[..., Settings]) -> None:
    topic = f"{make_settings().mqtt.topic_prefix}/s/c/events"
    sub, pub = _client(mqtt_broker), _client(mqtt_broker)
    try:
        got, _ = _collect(sub, topic)
        infos = [pub.publish(topic, f"m{i}".encode(), qos=1) for i in range(50)]
        for info in infos:
            info.wait_for_publish(5)
        assert wait_until(lambda: len(got) == 50)
        assert got == [f"m{i}".encode() for i in range(50)]
    finally:
        for c in (sub, pub):
            c.loop_stop()
            c.disconnect()


def test_mosquitto_config_has_persistence_and_queue_limits(mqtt_broker: MosquittoProcess) -> None:
    conf = mqtt_broker.conf_path.read_text()
    assert f"listener {mqtt_broker.port} 127.0.0.1" in conf
    assert f"persistence_location {mqtt_broker.data_dir}/" in conf
    assert "max_queued_messages 100000" in conf
    assert "allow_anonymous true" in conf


def test_mosquitto_sigkill_and_restart_on_same_port(make_mqtt_broker: Callable[..., MosquittoProcess]) -> None:
    broker = make_mqtt_broker()
    port, pid = broker.port, broker.pid
    broker.kill()
    assert not broker.running
    assert not port_open(broker.host, port)
    broker.restart()
    assert broker.port == port and broker.pid != pid
    client = _client(broker)
    try:
        client.publish("x/y", b"after-restart", qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


def test_mosquitto_persists_retained_across_clean_restart(make_mqtt_broker: Callable[..., MosquittoProcess]) -> None:
    broker = make_mqtt_broker()
    pub = _client(broker)
    pub.publish("r/status", b"online", qos=1, retain=True).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    broker.restart()  # SIGTERM: Mosquitto writes its persistence file on a clean exit
    assert (broker.data_dir / "mosquitto.db").exists()
    sub = _client(broker)
    try:
        got, _ = _collect(sub, "r/status")
        assert wait_until(lambda: got == [b"online"])
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_mosquitto_start_failure_reports_log_tail(tmp_path: Path) -> None:
    broker = MosquittoProcess(tmp_path, extra_config="this_is_not_an_option 1")
    with pytest.raises(LocalStackError, match="mosquitto exited"):
        broker.start()
    assert not broker.running


def test_tansu_produce_consume_with_keys(kafka_broker: TansuProcess, make_settings: Callable[..., Settings]) -> None:
    kafka = make_settings().kafka
    producer = KafkaProducer(**kafka.client_kwargs(), acks="all")
    try:
        for i in range(20):
            producer.send(kafka.events_topic, key=f"cam-{i % 3}".encode(), value=f"v{i}".encode())
        producer.flush(10)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        kafka.events_topic,
        **kafka.client_kwargs(),
        **kafka.group_kwargs(),
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
    )
    try:
        records: list[Any] = []  # kafka-python's ConsumerRecords (no type hints)
        deadline = time.monotonic() + 30
        while len(records) < 20 and time.monotonic() < deadline:
            for batch in consumer.poll(500).values():
                records.extend(batch)
    finally:
        consumer.close()
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(20))
    # Same key, same partition: per-camera order holds.
    by_key: dict[bytes, set[int]] = {}
    for r in records:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())


def test_ensure_topics_is_idempotent(kafka_broker: TansuProcess) -> None:
    prefix = f"e{uuid.uuid4().hex[:6]}"
    kafka = Settings().kafka.model_copy(
        update={
            "bootstrap_servers": kafka_broker.bootstrap,
            "events_topic": f"{prefix}.events",
            "alerts_topic": f"{prefix}.alerts",
            "config_topic": f"{prefix}.config",
            "dead_letter_topic": f"{prefix}.deadletter",
            "partitions": 3,
        }
    )
    assert sorted(ensure_topics(kafka)) == sorted(project_topics(kafka))
    assert ensure_topics(kafka) == []
    admin = KafkaAdminClient(**kafka.client_kwargs())
    try:
        described = admin.describe_topics(project_topics(kafka))
    finally:
        admin.close()
    assert {len(t["partitions"]) for t in described} == {3}
    with pytest.raises(ConfigError, match="partitions"):
        ensure_topics(kafka.model_copy(update={"partitions": 2}))


def test_tansu_restart_loses_records_memory_only(make_kafka_broker: Callable[..., TansuProcess]) -> None:
    broker = make_kafka_broker()
    kafka = Settings().kafka.model_copy(update={"bootstrap_servers": broker.bootstrap, "partitions": 1})
    ensure_topics(kafka)
    producer = KafkaProducer(**kafka.client_kwargs(), acks="all")
    producer.send(kafka.events_topic, b"before").get(10)
    producer.close()
    port = broker.port
    broker.kill()
    broker.restart()
    assert broker.port == port
    # Documented limitation of this Tansu build (memory:// only): topics and records are gone.
    assert sorted(ensure_topics(kafka)) == sorted(project_topics(kafka))
    consumer = KafkaConsumer(**kafka.client_kwargs(), consumer_timeout_ms=1000)
    try:
        tp = TopicPartition(kafka.events_topic, 0)
        consumer.assign([tp])
        assert consumer.end_offsets([tp])[tp] == 0
    finally:
        consumer.close()


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 < port < 65536
    assert not port_open("127.0.0.1", port)


def test_mosquitto_password_file(make_mqtt_broker: Callable[..., MosquittoProcess], tmp_path: Path) -> None:
    passwords = write_password_file(tmp_path / "passwd", {"cam": "s3cret"})
    acl = tmp_path / "acl"
    acl.write_text("user cam\ntopic readwrite vision/#\n")
    broker = make_mqtt_broker(allow_anonymous=False, password_file=passwords, acl_file=acl)
    assert "allow_anonymous false" in broker.conf_path.read_text()
    results: dict[str, ReasonCode] = {}
    for name, password in (("good", "s3cret"), ("bad", "wrong")):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.username_pw_set("cam", password)
        done = threading.Event()

        def on_connect(
            c: mqtt.Client,
            u: object,
            f: object,
            rc: ReasonCode,
            p: object,
            name: str = name,
            done: threading.Event = done,
        ) -> None:
            results[name] = rc
            done.set()

        client.on_connect = on_connect
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            assert done.wait(5)
        finally:
            client.loop_stop()
            client.disconnect()
    assert not results["good"].is_failure
    assert results["bad"].is_failure
