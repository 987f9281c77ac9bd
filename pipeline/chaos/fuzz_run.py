"""The MQTT fuzzer against a private, password-protected Mosquitto with ``pipeline bridge``
attached; afterwards both must still run and an authenticated edge's events must reach Kafka."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition
from pydantic import SecretStr

from pipeline.chaos.mqtt_fuzz import FuzzReport, FuzzTarget, MqttFuzzer
from pipeline.chaos.rig import ChaosEnv, read_events
from pipeline.chaos.scripted_edge import ScriptedEdge
from pipeline.chaos.stream import ScriptedStream
from pipeline.local_stack.mosquitto import write_password_file
from pipeline.settings import Settings
from pipeline.topics import Kind, Topics


@dataclass
class FuzzOutcome:
    report: FuzzReport
    broker_alive: bool
    bridge_alive: bool
    after_events: int  # events an authenticated edge sent after the fuzzing
    after_in_kafka: int
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> records (bridge DLQ)

    @property
    def ok(self) -> bool:
        return (
            self.broker_alive
            and self.bridge_alive
            and self.report.probe_failures == 0
            and self.after_in_kafka == self.after_events
        )


def _dead_letters(settings: Settings) -> dict[str, int]:
    consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False, group_id=None)
    out: dict[str, int] = {}
    try:
        topic = settings.kafka.dead_letter_topic
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        idle = 0
        while idle < 3:
            batch = consumer.poll(timeout_ms=1000)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for r in records:
                    reason = json.loads(r.value).get("reason", "?")
                    out[reason] = out.get(reason, 0) + 1
    finally:
        consumer.close()
    return out


def fuzz_mqtt(env: ChaosEnv, cases: int, *, seed: int = 1, after_events: int = 30) -> FuzzOutcome:
    users = {"fuzzer": uuid.uuid4().hex, "bridge": uuid.uuid4().hex, "edge": uuid.uuid4().hex}
    pw = write_password_file(env.work_dir / f"fuzz-passwd-{uuid.uuid4().hex[:6]}", users)
    mqtt = env.mqtt_broker(allow_anonymous=False, password_file=pw)
    stream = ScriptedStream(after_events, cams=("cam-1", "cam-2"))
    base = env.settings(stream, mqtt, env.kafka_broker())

    def as_user(user: str) -> Settings:
        mqtt_user = base.mqtt.model_copy(update={"username": user, "password": SecretStr(users[user])})
        return base.model_copy(update={"mqtt": mqtt_user})

    bridge = env.bridge(as_user("bridge"))
    topics = Topics(base.mqtt.topic_prefix)
    target = FuzzTarget(mqtt.host, mqtt.port, "fuzzer", users["fuzzer"],
                        lambda cam: topics.camera(stream.site, cam, Kind.EVENTS), stream.site)  # fmt: skip
    report = MqttFuzzer(target, seed).run(cases)
    broker_alive, bridge_alive = mqtt.running, bridge.running
    edge = ScriptedEdge(as_user("edge"), stream, rate_per_s=50).start()
    try:
        edge.wait("drained", 90)
    finally:
        edge.close()
    got = read_events(base)
    return FuzzOutcome(
        report=report,
        broker_alive=broker_alive and mqtt.running,
        bridge_alive=bridge_alive and bridge.running,
        after_events=after_events,
        after_in_kafka=len(stream.ids() & set(got.counts)),
        dead_letters=_dead_letters(base),
    )


def fuzz_table(o: FuzzOutcome) -> str:
    r = o.report
    top = sorted(o.dead_letters.items(), key=lambda kv: -kv[1])[:8]
    return "\n".join([
        f"   fuzz: {r.cases} cases (seed {r.seed}) in {r.wall_s:.0f} s, {r.sent_bytes:,} bytes;"
        f" broker closed {r.refused_connections} connections",
        f"   liveness probes {r.probes}, failed {r.probe_failures}; mosquitto alive {o.broker_alive},"
        f" bridge alive {o.bridge_alive}",
        f"   afterwards an authenticated edge sent {o.after_events} events: {o.after_in_kafka} in Kafka",
        f"   bridge dead letters by reason: {dict(top)}",
        f"   fuzz: {'ok' if o.ok else 'FAILED'}",
    ])  # fmt: skip
