"""Bridge restarts and crashes, Kafka outages, several bridges on one shared subscription."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.local_stack.kafka_topics import ensure_topics
from pipeline.local_stack.mosquitto import MosquittoProcess
from pipeline.local_stack.pipeline_service import PipelineService
from pipeline.local_stack.ports import free_port
from pipeline.local_stack.tansu import TansuProcess
from pipeline.metrics import Registry
from pipeline.operators.schema import Event, decode_event, encode_event
from pipeline.settings import Settings
from pipeline.testing import wait_until
from tests.bridge.bridge_helpers import (
    SITE,
    bridge_settings,
    events_topic,
    make_event,
    mqtt_peer,
    read_topic,
    running_bridge,
)

pytestmark = pytest.mark.integration


def seqs_in_kafka(settings: Settings, min_count: int, timeout_s: float = 30) -> Counter[tuple[str, int]]:
    records = read_topic(settings, settings.kafka.events_topic, min_count=min_count, timeout_s=timeout_s,
                         settle_s=0.5)  # fmt: skip
    out: Counter[tuple[str, int]] = Counter()
    for r in records:
        event = decode_event(r.value)
        assert isinstance(event, Event)
        out[(event.cam, event.seq)] += 1
    return out


def test_graceful_restart_mid_stream_loses_nothing(make_settings: Callable[..., Settings]) -> None:
    # A raw publisher here, no edge outbox: what Mosquitto holds for the bridge while it restarts
    # is kept by its persistent session (off by default with a shared group: see BridgeSettings).
    settings = bridge_settings(make_settings, persistent_session=True)
    n = 300
    with mqtt_peer(settings) as edge:
        with running_bridge(settings):
            for seq in range(n // 2):
                edge.publish(events_topic(settings, "cam-1"), encode_event(make_event("cam-1", seq)))
        # Bridge gone (session kept by Mosquitto): these wait in its session queue.
        for seq in range(n // 2, n):
            edge.publish(events_topic(settings, "cam-1"), encode_event(make_event("cam-1", seq)))
        with running_bridge(settings):
            got = seqs_in_kafka(settings, n)
    assert set(got) == {("cam-1", s) for s in range(n)}
    duplicates = sum(c - 1 for c in got.values())
    assert duplicates == 0, f"graceful stop should not duplicate, got {duplicates}"


def test_killed_bridge_process_loses_nothing(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = bridge_settings(make_settings, health_port=free_port(), persistent_session=True)
    config = tmp_path / "bridge.yaml"
    config.write_text(settings.to_yaml())
    bridge = PipelineService("bridge", tmp_path / "bridge", config, ["bridge"], start_timeout_s=60)
    n, cams = 600, ("cam-1", "cam-2")
    published = threading.Event()
    killed = threading.Event()
    with mqtt_peer(settings) as edge:
        bridge.start()
        try:
            health = f"http://127.0.0.1:{settings.bridge.health_port}"
            with urllib.request.urlopen(f"{health}/healthz", timeout=5) as resp:
                assert resp.status == 200

            def publish() -> None:
                for seq in range(n):
                    if seq == n // 2:  # the second half is published only once the bridge is dead
                        killed.wait(60)
                    for cam in cams:
                        edge.publish(events_topic(settings, cam), encode_event(make_event(cam, seq)))
                published.set()

            publisher = threading.Thread(target=publish, daemon=True)
            publisher.start()
            read_topic(settings, settings.kafka.events_topic, min_count=200, timeout_s=20)
            bridge.kill()  # SIGKILL mid-stream: no drain, no DISCONNECT
            killed.set()
            assert not published.is_set(), "the stream must still be running at the kill"
            bridge.start()
            publisher.join(60)
            got = seqs_in_kafka(settings, n * len(cams), timeout_s=40)
            with urllib.request.urlopen(f"{health}/metrics", timeout=5) as resp:
                assert b"pipeline_bridge_uplink_received" in resp.read()
        finally:
            bridge.stop()
    assert set(got) == {(cam, s) for s in range(n) for cam in cams}
    duplicates = sum(c - 1 for c in got.values())
    print(f"killed bridge: {n * len(cams)} events, {duplicates} duplicates in Kafka")


# Known noise: kafka-python 3.0.12 keeps the sockets of refused connection attempts in suspended
# connect coroutines after close(); they are reported as unclosed at interpreter exit.
def test_kafka_outage_holds_messages_in_mosquitto(
    make_settings: Callable[..., Settings], make_kafka_broker: Callable[..., TansuProcess]
) -> None:
    # The broker is stopped (SIGSTOP: a hung broker, its port still accepting) rather than killed:
    # the local Tansu is memory-only, and a restarted empty one races the bridge, which produces
    # into a topic Tansu auto-creates before the test can re-create it with our partition count
    # (then the re-creation wipes it). A crash and restart of the broker is the chaos scenario
    # "kafka-restart"; here the point is the bridge's backpressure while Kafka does not answer.
    kafka = make_kafka_broker()
    settings = bridge_settings(make_settings, max_inflight=20, persistent_session=True)
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": kafka.bootstrap})}
    )
    ensure_topics(settings.kafka)
    metrics = Registry()
    topic = events_topic(settings, "cam-1")
    with running_bridge(settings, registry=metrics) as bridge, mqtt_peer(settings) as edge:
        for seq in range(10):
            edge.publish(topic, encode_event(make_event("cam-1", seq)))
        assert len(seqs_in_kafka(settings, 10)) == 10
        kafka.suspend()
        try:
            for seq in range(10, 80):
                edge.publish(topic, encode_event(make_event("cam-1", seq)))
            # Receive Maximum = max_inflight: the broker sent 20, holds the other 50 in the session.
            assert wait_until(lambda: bridge.uplink.inflight == 20, 15), bridge.uplink.inflight
            time.sleep(2)  # and takes no more while Kafka stays silent
            assert bridge.uplink.inflight == 20
            assert metrics.counter("bridge_uplink_produced_total") == 10
            # 10 + the window of 20; a loaded machine may see one MQTT reconnect, whose redelivery
            # of the window counts again. Without the window the bridge would have taken all 80.
            assert 30 <= metrics.counter("bridge_uplink_received_total") <= 50
        finally:
            kafka.resume()
        got = seqs_in_kafka(settings, 80, timeout_s=90)
        assert {s for _, s in got} == set(range(80))
        assert wait_until(lambda: bridge.uplink.inflight == 0, 30)
        assert bridge.healthy()


def test_mqtt_broker_restart_bridge_reconnects(
    make_settings: Callable[..., Settings], make_mqtt_broker: Callable[..., MosquittoProcess]
) -> None:
    broker = make_mqtt_broker()
    # Direct subscription: with a $share subscription, Mosquitto 2.0.11 restores the session
    # after its restart but routes no new messages to it (resubscribing, even unsubscribe +
    # subscribe, did not help); seen here, not yet understood.
    settings = bridge_settings(make_settings, shared_group=None)
    settings = settings.model_copy(
        update={"mqtt": settings.mqtt.model_copy(update={"host": broker.host, "port": broker.port})}
    )
    with running_bridge(settings) as bridge:
        with mqtt_peer(settings) as edge:
            for seq in range(50):
                edge.publish(events_topic(settings, "cam-1"), encode_event(make_event("cam-1", seq)))
        broker.restart()  # SIGTERM: Mosquitto saves sessions, then starts on the same port
        # The bridge notices the drop and resubscribes; what a publisher sends in between is the
        # edge outbox's job (replayed until acked: tests/faults), not this test's.
        assert wait_until(lambda: not bridge.uplink.subscribed.is_set(), 15), "bridge did not notice the restart"
        assert bridge.uplink.subscribed.wait(30), "bridge did not resubscribe after the broker restart"
        with mqtt_peer(settings) as edge:
            for seq in range(50, 100):
                edge.publish(events_topic(settings, "cam-1"), encode_event(make_event("cam-1", seq)))
        got = seqs_in_kafka(settings, 100)
        assert set(got) == {("cam-1", s) for s in range(100)}
        assert wait_until(bridge.healthy, 10)


def test_two_bridges_share_the_load(make_settings: Callable[..., Settings]) -> None:
    a = bridge_settings(make_settings)
    b = a.model_copy(update={"bridge": a.bridge.model_copy(update={"client_id": a.bridge.client_id + "-b"})})
    n, cams = 200, ("cam-1", "cam-2", "cam-3", "cam-4")
    with running_bridge(a) as first, running_bridge(b) as second, mqtt_peer(a) as edge:
        for seq in range(n):
            for cam in cams:
                edge.publish(events_topic(a, cam), encode_event(make_event(cam, seq, site=SITE)))
        got = seqs_in_kafka(a, n * len(cams))
        share = (
            first.metrics.counter("bridge_uplink_produced_total"),
            second.metrics.counter("bridge_uplink_produced_total"),
        )
    assert set(got) == {(cam, s) for s in range(n) for cam in cams}
    assert sum(share) == n * len(cams)
    assert min(share) > 0.2 * n * len(cams), f"load not split: {share}"


def test_shared_group_uses_a_clean_session_by_default(make_settings: Callable[..., Settings]) -> None:
    """A dead member's persistent $share session would keep swallowing its share of the events
    (Mosquitto 2.0); with a clean session the live bridges get everything at once."""
    shared = bridge_settings(make_settings)
    direct = bridge_settings(make_settings, shared_group=None)
    forced = bridge_settings(make_settings, persistent_session=True)
    with running_bridge(shared, ready=False) as a, running_bridge(direct, ready=False) as b:
        assert a.uplink.persistent_session is False
        assert b.uplink.persistent_session is True
    with running_bridge(forced, ready=False) as c:
        assert c.uplink.persistent_session is True
