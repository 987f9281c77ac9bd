"""The uplink's lean MQTT path, the compiled CRC-32C and the partition cache, without brokers:
PUBLISH packets written into a real socket pair and read back through paho's loop_read."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.bridge.key_partitions import KeyPartitions
from pipeline.compat import paho_uplink
from pipeline.compat.kafka_python import use_compiled_crc32c
from pipeline.compat.paho_uplink import PAHO_VERSION, READ_CHUNK, UplinkMqttClient, configure_uplink

pytestmark = pytest.mark.unit


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(
    topic: bytes, payload: bytes, *, mid: int = 1, qos: int = 1, dup: bool = False, props: bytes = b""
) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    body += _varint(len(props)) + props + payload
    return bytes([0x30 | (0x08 if dup else 0) | qos << 1]) + _varint(len(body)) + body


class Peer:
    """A lean client whose socket is one end of a socket pair; the test writes the other end."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int, bool, str, bytes]] = []
        self.messages: list[tuple[int, int, str, bytes]] = []
        self.paused = False
        self.client = UplinkMqttClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5,
                                       manual_ack=True)  # fmt: skip
        configure_uplink(self.client, on_event=lambda *e: self.events.append(e), read_paused=lambda: self.paused)
        self.client.on_message = self._on_message
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.client._sock = self.ours

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.append((msg.mid, msg.qos, msg.topic, bytes(msg.payload)))

    def send(self, data: bytes) -> None:
        self.theirs.sendall(data)

    def read_all(self) -> None:
        for _ in range(1000):
            self.client.loop_read()
            try:  # anything left unread in the kernel?
                if not self.ours.recv(1, socket.MSG_PEEK):
                    return
            except BlockingIOError:
                return
        raise AssertionError("loop_read does not drain the socket")

    def close(self) -> None:
        self.client._sock = None
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


def test_pinned_paho_is_the_one_the_lean_path_was_written_for() -> None:
    # If this fails after a paho upgrade: re-check UplinkMqttClient's overrides against the new
    # private methods (_sock_recv, loop_read, _handle_publish, _sock_close), then bump PAHO_VERSION.
    assert paho.mqtt.__version__ == PAHO_VERSION


def test_many_publishes_in_one_read_come_out_in_order(peer: Peer) -> None:
    payloads = [b'{"n":%d}' % i + b"x" * 200 for i in range(600)]  # > READ_CHUNK: several chunks
    stream = b"".join(publish(b"v/s/c/events", p, mid=i + 1) for i, p in enumerate(payloads))
    assert len(stream) > 2 * READ_CHUNK
    peer.send(stream)
    peer.read_all()
    assert [e[0] for e in peer.events] == list(range(1, 601))
    assert [e[4] for e in peer.events] == payloads
    assert {(e[1], e[2], e[3]) for e in peer.events} == {(1, False, "v/s/c/events")}
    assert peer.messages == []


def test_a_packet_straddling_reads_is_completed(peer: Peer) -> None:
    first = publish(b"t/a", b"a" * 100, mid=1)
    second = publish(b"t/b", b"b" * 300, mid=2)
    peer.send(first + second[:7])
    peer.read_all()
    assert [e[0] for e in peer.events] == [1]
    peer.send(second[7:])
    peer.read_all()
    assert [(e[0], e[3], e[4]) for e in peer.events] == [(1, "t/a", b"a" * 100), (2, "t/b", b"b" * 300)]


def test_qos0_dup_and_fallbacks_to_paho(peer: Peer) -> None:
    alias = b"\x23\x00\x05"  # Topic Alias = 5
    peer.send(
        publish(b"q/0", b"zero", qos=0)
        + publish(b"d/1", b"dup", mid=7, dup=True)
        + publish(b"p/1", b"with properties", mid=8, props=alias)
    )
    peer.read_all()
    assert peer.events == [(0, 0, False, "q/0", b"zero"), (7, 1, True, "d/1", b"dup")]
    assert peer.messages == [(8, 1, "p/1", b"with properties")]  # paho's own path, then on_message


def test_paused_reads_nothing(peer: Peer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paho_uplink, "PAUSE_S", 0.0)
    peer.paused = True
    peer.send(publish(b"t/x", b"held"))
    for _ in range(5):
        peer.client.loop_read()
    assert peer.events == []
    peer.paused = False
    peer.read_all()
    assert [e[4] for e in peer.events] == [b"held"]


def test_compiled_crc32c_matches_kafka_pythons_own() -> None:
    from kafka.record import default_records
    from kafka.record._crc32c import crc as crc_python

    assert use_compiled_crc32c() in ("crc32c", "aiokafka")
    data = bytes(range(256)) * 300
    assert default_records.calc_crc32c(memoryview(data)) == crc_python(memoryview(data))


def test_pubacks_wake_the_loop_once_and_go_out_in_one_write(peer: Peer) -> None:
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    client = peer.client
    client._sockpairR, client._sockpairW = wake_r, wake_w
    client._thread = threading.current_thread()  # as after loop_start: acks come from other threads
    try:
        for mid in range(1, 301):
            assert client.ack(mid, 1) == mqtt.MQTT_ERR_SUCCESS
        assert wake_r.recv(100) == b"0"  # one wake-up for 300 acks
        assert client.loop_write() == mqtt.MQTT_ERR_SUCCESS
        expected = b"".join(struct.pack("!BBH", 0x40, 2, mid) for mid in range(1, 301))
        got = b""
        while len(got) < len(expected):
            got += peer.theirs.recv(len(expected))
        assert got == expected
        assert not client.want_write()
        client.ack(301, 1)  # the queue was empty again: wakes again
        assert wake_r.recv(100) == b"0"
    finally:
        client._thread = None
        client._sockpairR = client._sockpairW = None
        wake_r.close()
        wake_w.close()


class _Cluster:
    def __init__(self, partitions: set[int] | None) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions or set()


def test_key_partitions_agree_with_kafka_pythons_default_partitioner() -> None:
    from kafka.partitioner.default import DefaultPartitioner

    cluster = _Cluster(None)
    producer: Any = type("P", (), {"_metadata": cluster})()
    cache = KeyPartitions(producer, "t")
    assert cache.get(b"cam-1") is None  # no metadata yet: send() partitions itself
    keys = [f"cam-{i}".encode() for i in range(200)]
    for count in (4, 12):  # and again after partitions were added
        cluster.partitions = set(range(count))
        for key in keys * 2:
            assert cache.get(key) == DefaultPartitioner().partition("t", key, key, None, None, cluster)
