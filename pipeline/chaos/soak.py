"""``pipeline chaos --soak``: a steady stream through the real stack while faults rain down.

Several scripted cameras (:class:`~pipeline.chaos.stream.ScriptedStream`, crops on each track's
first event) feed the edge's real outbox + publisher, through a :class:`TcpProxy` (link cuts) to
Mosquitto (restarted on its data dir), two bridges on one shared subscription, Tansu, two or three
Faust workers in one group (escalation ``always``, so the heavy model is on the path) and the
model server, back over MQTT to an alert subscriber. Meanwhile :mod:`~pipeline.chaos.soak_faults`
carries out the seeded schedule of :mod:`~pipeline.chaos.soak_schedule`.

At the end: every event id must be in Kafka and every expected alert id (computed from the
stream: the presence rule fires on each track's first event, edge weight 1.0 so the verdict
cannot change it) must reach the subscriber, none other. Reported: faults by kind, events,
alerts expected/received (and in the alerts topic), lost, duplicates, per kind p50/p95 of the
outage (fault injected -> component back in service), the drain after the last fault, and a
histogram of how many faults each event lived through (faults whose outage overlaps the time
from the event's emission to its alert, or to its record in Kafka for events without one).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.chaos.rig import ChaosEnv, start_all, topic_records
from pipeline.chaos.scripted_edge import ScriptedEdge
from pipeline.chaos.soak_faults import FaultRecord, FaultRunner, LinkTarget, ProcessTarget, Target
from pipeline.chaos.soak_schedule import KINDS, FaultKind, SoakPlan, make_schedule
from pipeline.chaos.stream import ScriptedStream
from pipeline.chaos.tcp_proxy import TcpProxy
from pipeline.local_stack.child_process import ChildProcess
from pipeline.local_stack.model_server import ModelServerProcess
from pipeline.metrics import percentile
from pipeline.settings import REPO_ROOT, Settings

# After the last fault: wait for the edge outbox to empty and every alert to come in as long as
# something moves (a backlog of heavy-model calls drains slowly on a loaded 2-core machine), but
# no longer than DRAIN_IDLE_S without any progress, nor DRAIN_MAX_S in all.
DRAIN_IDLE_S = 300.0
DRAIN_MAX_S = 3600.0
PROGRESS_EVERY_S = 15.0


@dataclass
class SoakResult:
    plan: SoakPlan
    events: int
    unique_in_kafka: int
    missing_events: list[str]
    alerts_expected: int
    alerts_received: int  # at the MQTT subscriber
    alerts_in_kafka: int
    missing_alerts: list[str]
    unexpected_alerts: int
    dup_events: int  # extra copies of event records in Kafka
    dup_alerts_kafka: int  # extra copies in the alerts topic (a worker re-emitting after a crash)
    dup_alerts_mqtt: int  # extra copies at the subscriber (it dedupes by id)
    faults: list[FaultRecord]
    skipped: int
    start_failures: int
    drain_s: float
    wall_s: float
    fault_s: float  # how long faults were injected
    lived_through: Counter[int] = field(default_factory=Counter)  # faults per event -> events

    @property
    def lost(self) -> int:
        return len(self.missing_events) + len(self.missing_alerts)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.unexpected_alerts == 0

    def by_kind(self, kind: FaultKind) -> list[FaultRecord]:
        return [f for f in self.faults if f.kind == kind]


def run_soak(env: ChaosEnv, plan: SoakPlan, progress: Callable[[str], None] = print) -> SoakResult:
    began_wall = time.time()
    stream = ScriptedStream(plan.events, cams=tuple(f"cam-{i + 1}" for i in range(plan.cams)), crops=True)
    mqtt = env.mqtt_broker(autosave_interval_s=1)
    ms: ModelServerProcess | None = None
    sections: dict[str, Any] = {}
    if plan.model_server:  # escalation always: every track's first event (it has the crop) is verified
        ms = env.stack.enter_context(ModelServerProcess(env.work_dir / "model-server", REPO_ROOT / "models"))
        sections = {
            "model_server": {"address": ms.address, "breaker_failures": 2, "breaker_reset_s": 2.0, "timeout_s": 3.0},
            "cloud": {"escalation": "always", "edge_weight": 1.0},
        }
    settings = env.settings(stream, mqtt, env.kafka_broker(), **sections)
    progress(f"soak: seed {plan.seed}, {plan.duration_s:.0f} s, {plan.events} events over {plan.cams} cameras, "
             f"{plan.workers} workers, {plan.bridges} bridges; starting the stack")  # fmt: skip
    bridges = [_bridge(env, settings, i) for i in range(plan.bridges)]
    run = settings.cloud.data_dir
    workers = [env.cloud(settings, f"cloud{i}", start=False, data_dir=run / f"w{i}") for i in range(plan.workers)]
    start_all(*bridges, *workers)
    sub = env.subscriber(settings)
    proxy = env.stack.enter_context(TcpProxy(mqtt.host, mqtt.port))
    edge_settings = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"port": proxy.port})})
    emitted_at: dict[int, float] = {}
    # The stream may outlast the faults (horizon_s): once they are over the edge finishes the
    # current tracks and stops (`limit`), and what counts is the events emitted.
    limit = {"n": stream.n}
    edge = ScriptedEdge(edge_settings, stream, rate_per_s=plan.rate_per_s, limit=lambda: limit["n"],
                        on_emit=lambda i: emitted_at.__setitem__(i, time.time()))  # fmt: skip
    targets: dict[FaultKind, list[Target]] = {
        "worker": [ProcessTarget("worker", f"worker{i}", w) for i, w in enumerate(workers)],
        "bridge": [ProcessTarget("bridge", f"bridge{i}", b) for i, b in enumerate(bridges)],
        "mosquitto": [ProcessTarget("mosquitto", "mosquitto", mqtt)],
        "model-server": [ProcessTarget("model-server", "model-server", ms)] if ms is not None else [],
        "link": [LinkTarget(proxy, lambda: edge.publisher.connected)],
    }
    schedule = make_schedule(plan)
    runner = FaultRunner(targets, schedule, plan.seed)
    expected = stream.expected_alerts()
    edge.start()
    began = time.monotonic()
    stop_progress = threading.Event()

    def report_progress() -> None:
        while not stop_progress.wait(PROGRESS_EVERY_S):
            kinds = Counter(r.kind for r in runner.records)
            progress(f"[soak {time.monotonic() - began:5.0f}/{plan.duration_s:.0f} s] emitted {edge.emitted()}/"
                     f"{stream.n}, outbox {edge.outbox.depth()}, alerts {len(set(sub.stats.unique) & set(expected))}"
                     f"/{len(expected)}; faults {len(runner.records)} {dict(kinds)}; down: "
                     f"{', '.join(runner.down_now()) or '-'}")  # fmt: skip

    reporter = threading.Thread(target=report_progress, name="soak-progress", daemon=True)
    reporter.start()
    try:
        runner.run(
            began,
            began + plan.duration_s,
            enough=lambda: all(
                sum(1 for r in runner.records if r.kind == kind) >= n for kind, n in plan.min_kills.items()
            ),
        )
        last_fault = time.monotonic()
        whole = 3 * plan.cams  # one track (3 events) per camera
        limit["n"] = min(stream.n, -(-edge.emitted() // whole) * whole)
        stream = dataclasses.replace(stream, n=limit["n"])
        expected = stream.expected_alerts()
        progress(f"soak: faults over ({len(runner.records)} injected, {len(runner.skipped)} skipped); "
                 f"draining {stream.n} events")  # fmt: skip
        drained = _drain(edge, stream.n, lambda: len(set(expected) & set(sub.stats.unique)), len(expected))
        drain_s = time.monotonic() - last_fault
        if not drained:
            progress(f"soak: NOT drained (outbox {edge.outbox.depth()}, emitted {edge.emitted()}/{stream.n}, "
                     f"alerts {len(set(expected) & set(sub.stats.unique))}/{len(expected)})")  # fmt: skip
        sub.wait_quiet(quiet_s=3.0, timeout_s=30.0)
    finally:
        stop_progress.set()
        edge.close()
    events = _read_topic(settings, settings.kafka.events_topic, "id")
    alerts = _read_topic(settings, settings.kafka.alerts_topic, "id")
    received = sub.stats.unique
    ends = _event_ends(stream, events.when, {aid: r.received_ms / 1000 for aid, r in received.items()}, expected)
    return SoakResult(
        plan=plan, events=stream.n,
        unique_in_kafka=len(set(events.counts) & stream.ids()),
        missing_events=sorted(stream.ids() - set(events.counts)),
        alerts_expected=len(expected),
        alerts_received=len(set(received) & set(expected)),
        alerts_in_kafka=len(set(alerts.counts) & set(expected)),
        missing_alerts=sorted(set(expected) - set(received)),
        unexpected_alerts=len(set(received) - set(expected)),
        dup_events=sum(c - 1 for c in events.counts.values()),
        dup_alerts_kafka=sum(c - 1 for c in alerts.counts.values()),
        dup_alerts_mqtt=sub.stats.duplicates,
        faults=runner.records, skipped=len(runner.skipped), start_failures=runner.start_failures,
        drain_s=round(drain_s, 1), wall_s=round(time.time() - began_wall, 1), fault_s=round(last_fault - began, 1),
        lived_through=_lived_through(stream, emitted_at, ends, runner.records),
    )  # fmt: skip


def _drain(edge: ScriptedEdge, n: int, alerts: Callable[[], int], expected: int) -> bool:
    """Wait until all ``n`` events are emitted and acknowledged and ``expected`` alerts are in,
    while progress is made (see DRAIN_IDLE_S)."""
    began = last_move = time.monotonic()
    last = (-1, -1, -1)
    while time.monotonic() - began < DRAIN_MAX_S:
        now_state = (edge.emitted(), edge.outbox.depth(), alerts())
        if now_state[0] >= n and now_state[1] == 0 and now_state[2] >= expected:
            return True
        if now_state != last:
            last, last_move = now_state, time.monotonic()
        elif time.monotonic() - last_move > DRAIN_IDLE_S:
            return False
        time.sleep(0.2)
    return False


def _bridge(env: ChaosEnv, settings: Settings, i: int) -> ChildProcess:
    b = settings.bridge.model_copy(update={"client_id": f"{settings.bridge.client_id}-{i}"})
    return env.service(settings.model_copy(update={"bridge": b}), f"bridge{i}", ["bridge"], start=False)


@dataclass
class _Topic:
    counts: Counter[str] = field(default_factory=Counter)
    when: dict[str, float] = field(default_factory=dict)  # id -> first record's timestamp (s)


def _read_topic(settings: Settings, topic: str, key: str, idle_polls: int = 3, timeout_s: float = 300.0) -> _Topic:
    """Every record of ``topic`` from the beginning, read until quiet: id -> copies, first time."""
    out = _Topic()
    for r in topic_records(settings, topic, idle_polls, timeout_s):
        try:
            rid = str(json.loads(r.value)[key])
        except (ValueError, KeyError, TypeError):
            continue
        out.counts[rid] += 1
        out.when.setdefault(rid, r.timestamp / 1000)
    return out


def _event_ends(stream: ScriptedStream, in_kafka: dict[str, float], alert_at: dict[str, float],
                expected: dict[str, str]) -> dict[str, float]:  # fmt: skip
    """Event id -> when its journey ended: its alert received, else its record in Kafka."""
    ends = dict(in_kafka)
    for aid, event_id in expected.items():
        if aid in alert_at:
            ends[event_id] = max(alert_at[aid], ends.get(event_id, 0.0))
    return ends


def _lived_through(stream: ScriptedStream, emitted_at: dict[int, float], ends: dict[str, float],
                   faults: list[FaultRecord]) -> Counter[int]:  # fmt: skip
    """Histogram: number of faults whose outage overlaps each event's journey -> events."""
    now = time.time()
    spans = sorted((f.injected_at, f.back_at or now) for f in faults)
    starts = [s for s, _ in spans]
    hist: Counter[int] = Counter()
    for i in range(stream.n):
        born, eid = emitted_at.get(i), stream.event(i).id
        if born is None or eid not in ends:
            continue
        died = ends[eid]
        hist[sum(1 for s, e in spans[: bisect.bisect_right(starts, died)] if e >= born)] += 1
    return hist


def format_report(r: SoakResult) -> str:
    p = r.plan
    lines = [
        f"soak: seed {p.seed}, {r.fault_s:.0f} s of faults, {p.workers} workers, {p.bridges} bridges, "
        f"{p.cams} cameras at {p.rate_per_s:g} events/s; wall {r.wall_s:.0f} s",
        "",
        "| fault | injected | of which follow-ups | outage p50 s | outage p95 s |",
        "|---|---|---|---|---|",
    ]
    for kind in KINDS:
        fs = r.by_kind(kind)
        outages = [f.outage_s for f in fs if f.outage_s is not None]
        lines.append(f"| {kind} | {len(fs)} | {sum(f.follow_up for f in fs)} | {_q(outages, 0.5)} | "
                     f"{_q(outages, 0.95)} |")  # fmt: skip
    lines += [
        f"\nskipped (target already down) {r.skipped}; starts that failed and were retried {r.start_failures}",
        "",
        "| events | unique in Kafka | alerts expected | received (MQTT) | in alerts topic | lost | "
        "dup events (Kafka) | dup alerts (Kafka / MQTT) | unexpected alerts | drain s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {r.events} | {r.unique_in_kafka} | {r.alerts_expected} | {r.alerts_received} | {r.alerts_in_kafka} | "
        f"{r.lost} | {r.dup_events} | {r.dup_alerts_kafka} / {r.dup_alerts_mqtt} | {r.unexpected_alerts} | "
        f"{r.drain_s} |",
        "",
        "drain: from every component back after the last fault to every event acknowledged and every alert in",
        "faults lived through per event (faults: events): " + _buckets(r.lived_through),
    ]  # fmt: skip
    if r.missing_events:
        lines.append(f"MISSING events ({len(r.missing_events)}): {r.missing_events[:20]}")
    if r.missing_alerts:
        lines.append(f"MISSING alerts ({len(r.missing_alerts)}): {r.missing_alerts[:20]}")
    lines.append("PASS: nothing lost" if r.ok else "FAIL")
    return "\n".join(lines)


def _buckets(hist: Counter[int]) -> str:
    """0, 1, 2-3, 4-7, ... (powers of two): a long run has events that lived through 90 faults."""
    out: dict[str, int] = {}
    for faults, n in sorted(hist.items()):
        lo = 0 if faults == 0 else 1 << (faults.bit_length() - 1)
        key = str(lo) if lo <= 1 else f"{lo}-{2 * lo - 1}"
        out[key] = out.get(key, 0) + n
    return ", ".join(f"{k}: {v}" for k, v in out.items())


def _q(values: list[float], q: float) -> str:
    v = percentile(values, q)
    return "-" if v is None else f"{v:.1f}"
