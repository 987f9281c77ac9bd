"""Outbox + publisher against a real Mosquitto: outages, restarts, acks and replays."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pipeline.edge_stage.events import EventBuilder
from pipeline.edge_stage.outbox import Outbox
from pipeline.edge_stage.publisher import Publisher
from pipeline.metrics import Registry
from pipeline.operators.schema import Acks, encode_acks
from pipeline.operators.tracking import Track
from pipeline.settings import Settings
from pipeline.testing import wait_until
from pipeline.topics import Kind, Topics
from tests.edge_stage.edge_helpers import Collector, edge_settings_for

pytestmark = pytest.mark.integration


def _event(cam: str = "cam-1") -> Any:
    tr = Track(id=1, label="person", score=0.7, box=(0.1, 0.1, 0.2, 0.4), first_ms=0, last_ms=0, hits=2, missed=0)
    return EventBuilder("s1", cam, "test@1").build("track_updated", tr, int(time.time() * 1000))


def _append(ob: Outbox, settings: Settings, n: int, pub: Publisher | None = None) -> None:
    topic = Topics(settings.mqtt.topic_prefix).camera("s1", "cam-1", Kind.EVENTS)
    for _ in range(n):
        ob.append(_event(), topic)
    if pub is not None:
        pub.kick()


def _seqs(c: Collector) -> list[int]:
    with c.lock:
        return [e.seq for e in c.events]


def _first_seen(seqs: list[int]) -> list[int]:
    seen: list[int] = []
    for s in seqs:
        if s not in seen:
            seen.append(s)
    return seen


class PersistentCollector(Collector):
    """A collector whose broker session survives a broker restart (so nothing is missed)."""

    def start(self) -> Collector:
        m = self.settings.mqtt
        self.topics = Topics(m.topic_prefix)
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"pc-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        # paho annotates the delays as int; they are seconds it sleeps, a float works (fast reconnects here).
        self.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{m.topic_prefix}/+/+/events", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: no hints on __init__
        props.SessionExpiryInterval = 300
        self.client.connect(m.host, m.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert subscribed.wait(10), "collector did not subscribe"
        return self


def test_broker_outage_events_wait_on_disk_then_drain_in_order(
    make_mqtt_broker: Callable[..., Any], tmp_path: Path
) -> None:
    broker = make_mqtt_broker()
    settings = edge_settings_for(broker.host, broker.port, tmp_path, drain_rate_per_s=200.0)
    collector = PersistentCollector(settings, ack=True).start()
    m = Registry()
    with Outbox(settings.edge.outbox_path, metrics=m) as ob:
        pub = Publisher(settings, ob, m)
        pub.start()
        try:
            assert pub.wait_connected(10)
            _append(ob, settings, 5, pub)
            assert collector.wait_for(lambda: ob.depth() == 0, 10), "acked events must leave the outbox"
            broker.stop()
            assert collector.wait_for(lambda: not pub.connected, 10)
            _append(ob, settings, 20, pub)
            passes = pub.passes
            assert wait_until(lambda: pub.passes >= passes + 3, 10), "the publisher loop ran meanwhile"
            assert ob.depth() == 20 and ob.unsent() == 20, "while disconnected, events wait on disk"
            broker.restart()
            assert collector.wait_for(lambda: ob.depth() == 0, 30), f"left {ob.depth()}"
            assert _first_seen(_seqs(collector)) == list(range(1, 26)), "nothing lost, in seq order"
            assert m.counter("mqtt_reconnects_total") >= 1
        finally:
            pub.stop()
            collector.stop()


def test_restart_replays_stored_events(
    edge_settings: Callable[..., Settings], collector_for: Callable[..., Collector]
) -> None:
    settings = edge_settings()
    with Outbox(settings.edge.outbox_path) as ob:  # first process: stored, "sent", never acked
        _append(ob, settings, 6)
        ob.mark_sent(r.rid for r in ob.due(30, 100)[:3])
    collector = collector_for(settings, ack=True)
    with Outbox(settings.edge.outbox_path) as ob:  # restarted process
        assert ob.depth() == 6
        pub = Publisher(settings, ob, Registry())
        pub.start()
        try:
            assert collector.wait_for(lambda: ob.depth() == 0, 10)
            assert _first_seen(_seqs(collector)) == [1, 2, 3, 4, 5, 6]
            _append(ob, settings, 1, pub)
            assert collector.wait_for(lambda: 7 in _seqs(collector), 10), "seq continues after restart"
        finally:
            pub.stop()


def test_unacked_events_are_replayed_until_acked(
    edge_settings: Callable[..., Settings], collector_for: Callable[..., Collector]
) -> None:
    settings = edge_settings(ack_timeout_s=0.5)
    collector = collector_for(settings, ack=False)
    m = Registry()
    with Outbox(settings.edge.outbox_path, metrics=m) as ob:
        pub = Publisher(settings, ob, m)
        pub.start()
        try:
            _append(ob, settings, 3, pub)
            assert collector.wait_for(lambda: _seqs(collector).count(1) >= 2, 10), "replayed after ack_timeout"
            assert m.counter("outbox_replayed_total") >= 1
            topic = Topics(settings.mqtt.topic_prefix).camera("s1", "cam-1", Kind.ACKS)
            collector.publish(topic, encode_acks(Acks(cam="cam-1", ranges=((1, 3),))))
            assert collector.wait_for(lambda: ob.depth() == 0, 10), "acks delete rows"
            n, acked, passes = len(_seqs(collector)), time.monotonic(), pub.passes
            # a replay would come ack_timeout_s (0.5 s) after a send: wait two of them and a loop pass
            assert wait_until(lambda: time.monotonic() - acked > 1.0 and pub.passes > passes + 1, 10)
            assert len(_seqs(collector)) == n, "no replay after the ack"
        finally:
            pub.stop()
