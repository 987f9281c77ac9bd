"""MQTT security on a real Mosquitto: no anonymous access, one credential per camera node and per
service, per-camera ACLs (the repo's deploy/mosquitto/acl), TLS with a test CA; checked by what
the bridge put into Kafka, not by the publisher's return code (MQTT 3.1.1 acknowledges a
forbidden publish and drops it)."""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from pipeline.bridge.service import Bridge, require_producer
from pipeline.chaos.rig import read_events
from pipeline.chaos.scripted_edge import ScriptedEdge, edge_settings_for
from pipeline.chaos.stream import ScriptedStream
from pipeline.edge_stage.outbox import Outbox
from pipeline.edge_stage.publisher import Publisher
from pipeline.local_stack.mosquitto import MosquittoProcess, TlsListener, write_password_file
from pipeline.local_stack.ports import free_port
from pipeline.metrics import Registry
from pipeline.operators.schema import encode_event
from pipeline.settings import Settings
from pipeline.testing import wait_until
from tests.security.security_helpers import Pki, acl_for, make_pki

pytestmark = pytest.mark.integration

PASSWORDS = {u: uuid.uuid4().hex for u in ("node-1", "node-2", "bridge", "alerts")}


@pytest.fixture
def secure(tmp_path: Path, make_settings: Callable[..., Settings]) -> Iterator[tuple[MosquittoProcess, Settings, Pki]]:
    base = make_settings()
    prefix = base.mqtt.topic_prefix
    pki = make_pki(tmp_path / "pki")
    pw = write_password_file(tmp_path / "passwd", PASSWORDS)
    acl = acl_for(prefix, tmp_path / "acl")
    tls = TlsListener(free_port(), pki.ca, pki.cert, pki.key)
    with MosquittoProcess(tmp_path / "mosq", allow_anonymous=False, password_file=pw, acl_file=acl, tls=tls) as m:
        mq = base.mqtt.model_copy(update={"host": "127.0.0.1", "port": tls.port, "tls_ca_file": pki.ca})
        yield m, base.model_copy(update={"mqtt": mq}), pki


def as_user(settings: Settings, user: str | None, **mqtt_kw: Any) -> Settings:
    upd: dict[str, Any] = {"username": user, "password": SecretStr(PASSWORDS[user])} if user else {}
    return settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={**upd, **mqtt_kw})})


class Peer:
    """A paho client over TLS as one user; MQTT 3.1.1 unless told otherwise."""

    def __init__(self, s: Settings, user: str | None, *, v5: bool = False, ca: Path | None = None) -> None:
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}", protocol=proto)
        if user:
            self.c.username_pw_set(user, PASSWORDS[user])
        self.c.tls_set(ca_certs=str(ca or s.mqtt.tls_ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.messages: list[tuple[str, bytes]] = []
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.c.connect(s.mqtt.host, s.mqtt.port)
        self.c.loop_start()
        assert self.connected.wait(10)

    def _on_connect(self, c: mqtt.Client, u: Any, f: mqtt.ConnectFlags, rc: ReasonCode, p: Properties | None) -> None:
        self.connack = rc
        self.connected.set()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_acls_no_anonymous_and_one_credential_each(secure: tuple[MosquittoProcess, Settings, Pki],
                                                   tmp_path: Path) -> None:  # fmt: skip
    _, base, _ = secure
    prefix = base.mqtt.topic_prefix

    def topic(cam: str, kind: str) -> str:
        return f"{prefix}/site-a/{cam}/{kind}"

    stream = ScriptedStream(6, site="site-a", cams=("cam-1", "cam-2"))
    edge_s = edge_settings_for(as_user(base, "node-1"), stream, tmp_path / "outbox.sqlite")
    edge_s = edge_s.model_copy(update={"edge": edge_s.edge.model_copy(update={"node_id": "node-1"})})
    producer = require_producer(base, 15)
    bridge = Bridge(as_user(base, "bridge"), producer)
    bridge.start()
    peers: list[Peer] = []
    try:
        assert bridge.wait_ready(30), "the bridge user may subscribe to every camera's events ($share)"
        # node-1 over TLS with its own credential: its events go through and its acks come back
        edge = ScriptedEdge(edge_s, stream, rate_per_s=50).start()
        try:
            assert edge.wait("drained", 60), "node-1 publishes its cameras' events and reads their acks"
        finally:
            edge.close()
        # node-1 as another camera: forbidden topic (3.1.1 says success, Mosquitto drops it) ...
        forged = ScriptedStream(3, site="site-a", cams=("cam-3",), tag="forged").events()
        n1 = Peer(base, "node-1")
        peers.append(n1)
        info = n1.c.publish(topic("cam-3", "events"), encode_event(forged[0]), qos=1)
        info.wait_for_publish(5)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, "MQTT 3.1.1: a forbidden publish is acknowledged"
        # ... or another camera's event on its own topic: dead-lettered as camera_mismatch
        n1.c.publish(topic("cam-1", "events"), encode_event(forged[1]), qos=1).wait_for_publish(5)
        # alert subscribers may not publish events either
        al = Peer(base, "alerts")
        peers.append(al)
        al.c.publish(topic("cam-1", "events"), encode_event(forged[2]), qos=1).wait_for_publish(5)
        # config: the bridge writes cam-1's retained config; node-2 may not read it, node-1 may
        br = Peer(base, "bridge")
        peers.append(br)
        cfg = {"v": 1, "site": "site-a", "cam": "cam-1", "rev": 1, "config": {"min_score": 0.6}}
        br.c.publish(topic("cam-1", "config"), json.dumps(cfg).encode(), qos=1, retain=True).wait_for_publish(5)
        n2 = Peer(base, "node-2")
        peers.append(n2)
        n2.c.subscribe([(topic("cam-1", "config"), 1), (f"{prefix}/site-a/+/config", 1), (topic("cam-1", "events"), 1)])
        al.c.subscribe([(f"{prefix}/+/+/events", 1), (f"{prefix}/alerts", 1)])
        n1.c.subscribe(topic("cam-1", "config"), 1)
        assert wait_until(lambda: any(t == topic("cam-1", "config") for t, _ in n1.messages), 10)
        # No fixed sleep for the negative check: sentinels each peer may read (node-2: its cam-3's
        # config; alerts: the alerts topic), sent by the bridge before and after node-1's event.
        # The first proves the subscriptions are live; Mosquitto routes the event before it
        # acknowledges it, so had it been deliverable it would arrive before the second.
        sentinels = {"n2": (topic("cam-3", "config"), n2), "al": (f"{prefix}/alerts", al)}

        def send_sentinels(payload: bytes) -> None:
            for sentinel_topic, peer in sentinels.values():
                br.c.publish(sentinel_topic, payload, qos=1).wait_for_publish(5)
                assert wait_until(lambda: (sentinel_topic, payload) in peer.messages, 10), peer.messages  # noqa: B023

        send_sentinels(b"before")
        n1.c.publish(topic("cam-1", "events"), encode_event(stream.event(0)), qos=1).wait_for_publish(5)
        send_sentinels(b"after")
        for name, (sentinel_topic, peer) in sentinels.items():
            got = [(t, m) for t, m in peer.messages]
            assert got == [(sentinel_topic, b"before"), (sentinel_topic, b"after")], (
                f"{name}: node-2 reads neither cam-1's config nor its events; alert subscribers read no events: {got}"
            )
    finally:
        for p in peers:
            p.close()
        bridge.close()
    events = read_events(base)
    assert set(events.counts) == stream.ids(), "Kafka holds node-1's own events, nothing forged"
    dlq = _dead_letter_reasons(base)
    assert dlq == ["camera_mismatch"], dlq


def _dead_letter_reasons(s: Settings) -> list[str]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**s.kafka.client_kwargs(), enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(s.kafka.dead_letter_topic, p) for p in range(s.kafka.partitions)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out, idle = [], 0
        while idle < 3:
            batch = consumer.poll(timeout_ms=1000)
            idle = 0 if batch else idle + 1
            out += [json.loads(r.value)["reason"] for rs in batch.values() for r in rs]
        return out
    finally:
        consumer.close()


def test_anonymous_connect_gets_not_authorized(secure: tuple[MosquittoProcess, Settings, Pki]) -> None:
    _, base, _ = secure
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(base.mqtt.tls_ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    got: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(cl: mqtt.Client, u: Any, f: mqtt.ConnectFlags, rc: ReasonCode, p: Properties | None) -> None:
        got.setdefault("rc", rc)
        done.set()

    c.on_connect = on_connect
    c.connect(base.mqtt.host, base.mqtt.port)
    c.loop_start()
    try:
        assert done.wait(10)
        assert got["rc"].is_failure and got["rc"].value in (134, 135), got["rc"]  # bad credentials / not authorized
    finally:
        c.loop_stop()


# paho 2.2.0 leaves the SSL socket of a failed handshake to the GC (ResourceWarning).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_tls_clients_verify_the_server(secure: tuple[MosquittoProcess, Settings, Pki], tmp_path: Path) -> None:
    m, base, _ = secure
    other = make_pki(tmp_path / "other", "other-ca")
    # a plain paho client trusting another CA fails the handshake
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wrong-ca", protocol=mqtt.MQTTv311)
    c.username_pw_set("node-1", PASSWORDS["node-1"])
    c.tls_set(ca_certs=str(other.ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect(base.mqtt.host, base.mqtt.port)
    # our edge publisher with the wrong CA never connects; with the right one it does
    for ca, expect in ((other.ca, False), (base.mqtt.tls_ca_file, True)):
        s = as_user(base, "node-1", tls_ca_file=ca)
        s = s.model_copy(update={"edge": s.edge.model_copy(update={"node_id": "node-1", "site": "site-a"})})
        outbox = Outbox(tmp_path / f"ob-{expect}.sqlite")
        pub = Publisher(s, outbox, Registry())
        pub.start()
        try:
            assert pub.wait_connected(5 if not expect else 20) is expect
        finally:
            pub.stop()
            outbox.close()
    assert m.running
