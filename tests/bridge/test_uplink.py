"""MQTT -> Kafka through real Mosquitto and Tansu: forwarding, order, acks, dead letters."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.operators.schema import Acks, Event, decode_acks, decode_event, encode_event
from pipeline.settings import Settings
from pipeline.testing import wait_until
from pipeline.topics import Kind, Topics
from tests.bridge.bridge_helpers import (
    SITE,
    bridge_settings,
    events_topic,
    kcat_env,
    make_event,
    mqtt_peer,
    read_topic,
    running_bridge,
)

pytestmark = pytest.mark.integration

CAMS = ("cam-1", "cam-2", "cam-3")


def _decoded_event(raw: bytes) -> Event:
    """decode_event of a record the test expects to be a valid event."""
    ev = decode_event(raw)
    assert isinstance(ev, Event), ev
    return ev


def test_events_reach_kafka_in_order_with_key_and_headers(make_settings: Callable[..., Settings]) -> None:
    settings = bridge_settings(make_settings)
    per_cam = 60
    with running_bridge(settings) as bridge, mqtt_peer(settings) as edge:
        for seq in range(per_cam):
            for cam in CAMS:
                edge.publish(events_topic(settings, cam), encode_event(make_event(cam, seq)))
        # Interop: the Mosquitto command-line client publishes a few more for cam-1.
        for seq in range(per_cam, per_cam + 5):
            subprocess.run(
                ["mosquitto_pub", "-h", settings.mqtt.host, "-p", str(settings.mqtt.port), "-V", "mqttv5",
                 "-q", "1", "-t", events_topic(settings, "cam-1"), "-m", encode_event(make_event("cam-1", seq))],
                check=True, timeout=10,
            )  # fmt: skip
        total = per_cam * len(CAMS) + 5
        records = read_topic(settings, settings.kafka.events_topic, min_count=total, settle_s=0.5)
        assert len(records) == total
        seqs: dict[str, list[int]] = defaultdict(list)
        partitions: dict[str, set[int]] = defaultdict(set)
        for r in sorted(records, key=lambda r: (r.partition, r.offset)):
            event = decode_event(r.value)
            assert not hasattr(event, "reason"), event
            assert r.key == f"{event.site}/{event.cam}".encode()  # site/cam: ids repeat across sites
            headers = dict(r.headers)
            assert headers["event_id"] == event.id.encode()
            assert headers["site"] == SITE.encode()
            seqs[event.cam].append(event.seq)
            partitions[event.cam].add(r.partition)
        for cam in CAMS:
            assert len(partitions[cam]) == 1  # key -> one partition
            expected = list(range(per_cam + (5 if cam == "cam-1" else 0)))
            assert seqs[cam] == expected, f"{cam} out of order"
        assert bridge.metrics.counter("bridge_uplink_produced_total") == total
        assert bridge.metrics.counter("dead_letters_total") == 0
        assert wait_until(lambda: bridge.uplink.inflight == 0)


def test_acks_cover_every_published_seq(make_settings: Callable[..., Settings]) -> None:
    settings = bridge_settings(make_settings)
    topics = Topics(settings.mqtt.topic_prefix)
    n = 100
    with (
        running_bridge(settings),
        mqtt_peer(settings, topics.all_cameras(Kind.ACKS)) as edge,
    ):
        for seq in range(n):
            for cam in CAMS[:2]:
                edge.publish(events_topic(settings, cam), encode_event(make_event(cam, seq)))

        def covered(cam: str) -> set[int]:
            out: set[int] = set()
            for m in edge.received(topics.camera(SITE, cam, Kind.ACKS)):
                acks = decode_acks(bytes(m.payload))
                assert not hasattr(acks, "reason"), acks
                assert acks.cam == cam
                for lo, hi in acks.ranges:
                    out.update(range(lo, hi + 1))
            return out

        assert edge.wait_for(lambda _: all(covered(c) >= set(range(n)) for c in CAMS[:2]), 15)
        assert covered("cam-1") == set(range(n))
        # Ranges are merged: far fewer ack messages than events.
        assert len(edge.received(topics.camera(SITE, "cam-1", Kind.ACKS))) < n


def test_rejects_go_to_dead_letter_and_bridge_keeps_forwarding(make_settings: Callable[..., Settings]) -> None:
    settings = bridge_settings(make_settings, max_future_skew_s=60, dead_letter_max_bytes=512)
    settings = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"max_payload_bytes": 2048})})
    topic = events_topic(settings, "cam-1")
    good = make_event("cam-1", 1)
    wrong_version = json.loads(encode_event(good))
    wrong_version["v"] = 99
    bad = {
        "not_json": b"{not json",
        "unknown_version": json.dumps(wrong_version).encode(),
        "too_large": b"x" * 5000,
        "camera_mismatch": encode_event(make_event("cam-2", 2)),  # cam-2's event on cam-1's topic
        "future_ts": encode_event(make_event("cam-1", 3, ts=int(time.time() * 1000) + 3_600_000)),
    }
    acks_topic = Topics(settings.mqtt.topic_prefix).camera(SITE, "cam-1", Kind.ACKS)
    with running_bridge(settings) as bridge, mqtt_peer(settings, acks_topic) as edge:
        for payload in bad.values():
            edge.publish(topic, payload)
        edge.publish(topic, encode_event(good))
        dead = read_topic(settings, settings.kafka.dead_letter_topic, min_count=len(bad), settle_s=0.3)
        events = read_topic(settings, settings.kafka.events_topic, min_count=1)
        assert [_decoded_event(r.value).id for r in events] == [good.id]
        by_reason = {}
        for r in dead:
            value = json.loads(r.value)
            assert value["v"] == 1 and value["source"] == "mqtt" and value["topic"] == topic
            assert r.key == topic.encode()
            by_reason[value["reason"]] = value
        assert set(by_reason) == set(bad)
        big = by_reason["too_large"]
        assert big["size"] == 5000 and big["truncated"] is True
        assert base64.b64decode(big["payload_b64"]) == b"x" * 512
        assert base64.b64decode(by_reason["not_json"]["payload_b64"]) == b"{not json"
        for reason in bad:
            assert bridge.metrics.counter("dead_letters_total", reason=reason, source="mqtt") == 1
        assert wait_until(lambda: bridge.uplink.inflight == 0)  # rejects are acked to MQTT too

        def acked() -> set[int]:
            out: set[int] = set()
            for m in edge.received(acks_topic):
                acks = decode_acks(bytes(m.payload))
                assert isinstance(acks, Acks), acks
                for lo, hi in acks.ranges:
                    out.update(range(lo, hi + 1))
            return out

        # The good event and the dead-lettered future-stamped one (its outcome is durable) are
        # released from cam-1's outbox; cam-2's seq 2 sent on cam-1's topic is not cam-1's to ack.
        assert edge.wait_for(lambda _: acked() >= {1, 3}, 10)
        assert 2 not in acked()


def test_a_validation_bug_dead_letters_the_message_instead_of_stalling(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: the validator raises on one payload (as schema did on 400-digit numbers,
    # found by boofuzz). That message is dead-lettered with the reason; later ones still flow.
    import pipeline.bridge.uplink as uplink_module
    import pipeline.bridge.validation as validation

    real = validation.validate_uplink  # what uplink imported

    def flaky(topic: str, raw: bytes, **kw: Any) -> Any:
        if b"boom" in raw:
            raise OverflowError("int too large to convert to float")
        return real(topic, raw, **kw)

    monkeypatch.setattr(uplink_module, "validate_uplink", flaky)
    settings = bridge_settings(make_settings)
    topic = events_topic(settings, "cam-1")
    good = make_event("cam-1", 1)
    with running_bridge(settings), mqtt_peer(settings) as edge:
        edge.publish(topic, b'{"boom": 1}')
        edge.publish(topic, encode_event(good))
        events = read_topic(settings, settings.kafka.events_topic, min_count=1)
        dead = read_topic(settings, settings.kafka.dead_letter_topic, min_count=1)
    assert [_decoded_event(r.value).id for r in events] == [good.id]
    (record,) = dead
    value = json.loads(record.value)
    assert value["reason"] == "validation_error" and "OverflowError" in value["detail"]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (./dev setup installs it)")
def test_kcat_reads_the_events_topic(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = bridge_settings(make_settings)
    with running_bridge(settings), mqtt_peer(settings) as edge:
        for seq in range(5):
            edge.publish(events_topic(settings, "cam-1"), encode_event(make_event("cam-1", seq)))
        read_topic(settings, settings.kafka.events_topic, min_count=5)
    env = kcat_env(tmp_path)
    version = subprocess.run(["kcat", "-V"], capture_output=True, text=True, timeout=10, env=env, check=True)
    assert "librdkafka 2.16" in version.stdout, version.stdout  # the wheel's library, not Debian's 2.0.2
    out = subprocess.run(
        ["kcat", "-b", settings.kafka.bootstrap_servers, "-t", settings.kafka.events_topic,
         "-C", "-e", "-o", "beginning", "-f", "%k\\t%h\\t%s\\n"],
        capture_output=True, text=True, timeout=30, check=True, env=env,
    )  # fmt: skip
    rows = [ln.split("\t", 2) for ln in out.stdout.splitlines() if ln.strip()]
    assert [key for key, _, _ in rows] == [f"{SITE}/cam-1"] * 5
    events = [decode_event(value.encode()) for _, _, value in rows]
    assert all(isinstance(e, Event) for e in events)
    # One partition per camera key: kcat sees them in the order the edge sent them.
    assert [e.seq for e in events if isinstance(e, Event)] == list(range(5))
    assert all(f"event_id={e.id}" in headers for (_, headers, _), e in zip(rows, events, strict=True)
               if isinstance(e, Event))  # fmt: skip
