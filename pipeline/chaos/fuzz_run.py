"""The MQTT fuzzers (boofuzz: :mod:`pipeline.chaos.boofuzz_mqtt`; our own: :mod:`pipeline.chaos.mqtt_fuzz`)
against a private, password-protected Mosquitto with ``pipeline bridge`` attached; afterwards both
must still run and an authenticated edge's events must reach Kafka."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from pydantic import SecretStr

from pipeline.chaos.boofuzz_mqtt import BoofuzzReport, run_campaign
from pipeline.chaos.boofuzz_packets import MqttEndpoint
from pipeline.chaos.mqtt_fuzz import FuzzReport, FuzzTarget, MqttFuzzer
from pipeline.chaos.rig import ChaosEnv, KafkaEvents, read_events
from pipeline.chaos.scripted_edge import ScriptedEdge
from pipeline.chaos.stream import ScriptedStream
from pipeline.local_stack.mosquitto import MosquittoProcess, write_password_file
from pipeline.local_stack.pipeline_service import PipelineService
from pipeline.local_stack.ports import free_port
from pipeline.operators.schema import encode_event
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


@dataclass
class FuzzRig:
    """A private, password-protected Mosquitto with ``pipeline bridge`` attached (health port on),
    users ``fuzzer``, ``bridge`` and ``edge``, and the stream an authenticated edge sends afterwards."""

    mqtt: MosquittoProcess
    bridge: PipelineService
    base: Settings
    stream: ScriptedStream
    users: dict[str, str]

    def as_user(self, user: str) -> Settings:
        return _as_user(self.base, self.users, user)

    def events_topic(self, cam: str) -> str:
        return Topics(self.base.mqtt.topic_prefix).camera(self.stream.site, cam, Kind.EVENTS)

    @property
    def bridge_health(self) -> tuple[str, int]:
        port = self.base.bridge.health_port
        assert port is not None
        return self.base.bridge.health_host, port


def start_rig(env: ChaosEnv, after_events: int = 30) -> FuzzRig:
    users = {"fuzzer": uuid.uuid4().hex, "bridge": uuid.uuid4().hex, "edge": uuid.uuid4().hex}
    pw = write_password_file(env.work_dir / f"fuzz-passwd-{uuid.uuid4().hex[:6]}", users)
    mqtt = env.mqtt_broker(allow_anonymous=False, password_file=pw)
    stream = ScriptedStream(after_events, cams=("cam-1", "cam-2"))
    base = env.settings(stream, mqtt, env.kafka_broker(), bridge={"health_port": free_port()})
    return FuzzRig(mqtt, env.bridge(_as_user(base, users, "bridge")), base, stream, users)


def _as_user(base: Settings, users: dict[str, str], user: str) -> Settings:
    mqtt_user = base.mqtt.model_copy(update={"username": user, "password": SecretStr(users[user])})
    return base.model_copy(update={"mqtt": mqtt_user})


def traffic_after(rig: FuzzRig) -> tuple[int, KafkaEvents]:
    """An authenticated edge sends the rig's stream through its outbox; how many of its event ids
    reached Kafka, and everything the events topic holds."""
    edge = ScriptedEdge(rig.as_user("edge"), rig.stream, rate_per_s=50).start()
    try:
        edge.wait("drained", 90)
    finally:
        edge.close()
    got = read_events(rig.base)
    return len(rig.stream.ids() & set(got.counts)), got


def fuzz_mqtt(env: ChaosEnv, cases: int, *, seed: int = 1, after_events: int = 30) -> FuzzOutcome:
    rig = start_rig(env, after_events)
    target = FuzzTarget(rig.mqtt.host, rig.mqtt.port, "fuzzer", rig.users["fuzzer"], rig.events_topic,
                        rig.stream.site)  # fmt: skip
    report = MqttFuzzer(target, seed).run(cases)
    broker_alive, bridge_alive = rig.mqtt.running, rig.bridge.running
    in_kafka, _ = traffic_after(rig)
    return FuzzOutcome(
        report=report,
        broker_alive=broker_alive and rig.mqtt.running,
        bridge_alive=bridge_alive and rig.bridge.running,
        after_events=after_events,
        after_in_kafka=in_kafka,
        dead_letters=_dead_letters(rig.base),
    )


@dataclass
class BoofuzzOutcome:
    report: BoofuzzReport
    after_events: int  # events an authenticated edge sent after the campaign
    after_in_kafka: int
    fuzzed_events_in_kafka: int  # mutated-but-valid events the bridge passed on (other ids)
    bridge_disconnects: int  # times the bridge's MQTT client dropped its connection during the campaign
    dead_letters: dict[str, int] = field(default_factory=dict)

    @property
    def traffic_ok(self) -> bool:
        return self.after_in_kafka == self.after_events

    @property
    def ok(self) -> bool:
        r = self.report
        return r.cases > 0 and not (r.crashes or r.hangs or r.errors or r.aborted) and self.traffic_ok


def fuzz_mqtt_boofuzz(
    env: ChaosEnv,
    cases: int,
    *,
    rig: FuzzRig | None = None,
    progress: Callable[[str], None] | None = None,
    **campaign: Any,
) -> BoofuzzOutcome:
    """The boofuzz campaign (:mod:`pipeline.chaos.boofuzz_mqtt`) on ``rig`` (default: a fresh one),
    then the authenticated-traffic check; ``campaign`` goes to :func:`run_campaign`."""
    rig = rig or start_rig(env)
    cam = rig.stream.cams[0]
    fuzz_stream = ScriptedStream(1, site=rig.stream.site, cams=(cam,), tag=f"boofuzz-{uuid.uuid4().hex[:6]}")
    endpoint = MqttEndpoint(rig.mqtt.host, rig.mqtt.port, "fuzzer", rig.users["fuzzer"], rig.base.mqtt.topic_prefix,
                            rig.stream.site, cam, encode_event(fuzz_stream.event(0)))  # fmt: skip
    disconnects_before = _bridge_disconnects(rig)
    report = run_campaign(endpoint, rig.mqtt, rig.bridge, rig.bridge_health, cases,
                          work_dir=Path(rig.base.local.run_dir) / "boofuzz", progress=progress, **campaign)  # fmt: skip
    disconnects = _bridge_disconnects(rig) - disconnects_before
    in_kafka, got = traffic_after(rig)
    return BoofuzzOutcome(
        report=report,
        after_events=rig.stream.n,
        after_in_kafka=in_kafka,
        fuzzed_events_in_kafka=sum(n for i, n in got.counts.items() if i not in rig.stream.ids()),
        bridge_disconnects=disconnects,
        dead_letters=_dead_letters(rig.base),
    )


def _bridge_disconnects(rig: FuzzRig) -> int:
    try:
        return rig.bridge.log_path.read_text(errors="replace").count("uplink: MQTT disconnected")
    except OSError:
        return 0


def boofuzz_table(o: BoofuzzOutcome) -> str:
    r = o.report
    top = sorted(o.dead_letters.items(), key=lambda kv: -kv[1])[:8]
    rows = [
        "| fuzzer  | cases sent | crashes | hangs | post-fuzz traffic | duration s |",
        "|---------|------------|---------|-------|-------------------|------------|",
        f"| boofuzz | {r.cases:<10,} | {len(r.crashes):<7} | {len(r.hangs):<5} |"
        f" {f'{o.after_in_kafka}/{o.after_events} in Kafka':<17} | {r.wall_s:<10.0f} |",
    ]
    return "\n".join([
        *(f"   {row}" for row in rows),
        f"   cases by request: {r.cases_by_request} (of {r.mutations_defined:,} single-field mutations defined);"
        f" {r.bytes_sent:,} bytes",
        f"   broker answers to the mutated packet: {r.answers}; health probes {r.probes}",
        *(f"   crash: {c}" for c in r.crashes[:10]),
        *(f"   hang: {h}" for h in r.hangs[:10]),
        *([f"   aborted: {r.aborted}"] if r.aborted else []),
        *(f"   boofuzz error: {e[-300:]}" for e in r.errors[:5]),
        f"   the bridge's MQTT connection dropped {o.bridge_disconnects} times (paho reconnected)",
        f"   mutated events the bridge passed to Kafka: {o.fuzzed_events_in_kafka};"
        f" bridge dead letters by reason: {dict(top)}",
        f"   fuzz (boofuzz): {'ok' if o.ok else 'FAILED'}",
    ])  # fmt: skip


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
