"""What every fault scenario is built from: the :class:`ScenarioResult` it returns and the steps
the scenarios share (start the cloud side, wait for the edge outbox to drain, collect the result).

Separate from the scenarios themselves (:mod:`pipeline.chaos.crash_scenarios`,
:mod:`pipeline.chaos.link_scenarios`) so that each of those reads as its fault and nothing else,
and so that ``pipeline chaos`` and ``tests/faults`` can use the result type without the scenarios.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipeline.alerts_subscriber import AlertSubscriber
from pipeline.chaos.rig import ChaosEnv, KafkaEvents, read_events, start_all
from pipeline.chaos.scripted_edge import ScriptedEdge
from pipeline.chaos.stream import ScriptedStream
from pipeline.local_stack.child_process import ChildProcess
from pipeline.settings import Settings
from pipeline.testing import wait_until

DRAIN_TIMEOUT_S = 180.0
ALERT_TIMEOUT_S = 120.0


@dataclass
class ScenarioResult:
    name: str
    events_in: int
    unique_in_kafka: int
    missing_events: int
    alerts_expected: int | None  # None: the scenario runs no cloud worker
    alerts_received: int | None
    unexpected_alerts: int
    dup_events: int  # extra copies of event records in Kafka (at-least-once)
    dup_alerts: int  # extra copies of alerts at the subscriber (it dedupes by id)
    recovery_s: float | None
    notes: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)  # scenario-specific, all must hold
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        missing_alerts = 0
        if self.alerts_expected is not None and self.alerts_received is not None:
            missing_alerts = self.alerts_expected - min(self.alerts_expected, self.alerts_received)
        return self.missing_events + missing_alerts

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.unexpected_alerts == 0 and all(self.checks.values())


# --------------------------------------------------------------------------- shared steps


def start_cloud_side(env: ChaosEnv, settings: Settings, *, bridges: int = 1, cloud: bool = True) -> tuple[
    list[ChildProcess], list[ChildProcess], AlertSubscriber | None
]:  # fmt: skip
    """Bridges + a cloud worker (children, started in parallel) + an alert subscriber."""
    bs: list[ChildProcess] = []
    for i in range(bridges):
        b = settings.bridge.model_copy(update={"client_id": f"{settings.bridge.client_id}-{i}"})
        bs.append(env.service(settings.model_copy(update={"bridge": b}), f"bridge{i}", ["bridge"], start=False))
    cs: list[ChildProcess] = [env.cloud(settings, start=False)] if cloud else []
    start_all(*bs, *cs)
    sub = env.subscriber(settings) if cloud else None
    return bs, cs, sub


def collect_result(
    name: str,
    settings: Settings,
    stream: ScriptedStream,
    sub: AlertSubscriber | None,
    recovery_s: float | None,
    notes: list[str],
    *,
    event_ids: set[str] | None = None,
    events: KafkaEvents | None = None,
) -> ScenarioResult:
    """Wait for the expected alerts (and a quiet subscriber), read the events topic, and count what
    arrived, what is missing and what came twice."""
    ids = stream.ids() if event_ids is None else event_ids
    expected: set[str] = set(stream.expected_alerts()) if sub is not None else set()
    if sub is not None:
        wait_until(lambda: expected <= set(sub.stats.unique), ALERT_TIMEOUT_S, 0.2)
        sub.wait_quiet(quiet_s=3.0, timeout_s=30.0)
    if events is None:  # a scenario that checked the events itself passes what it read
        events = read_events(settings)
    got_ids = set(events.counts)
    if events.order_violations():
        notes.append(f"{events.order_violations()} events first seen out of seq order in Kafka")
    received = set(sub.stats.unique) if sub is not None else set()
    return ScenarioResult(
        name=name,
        events_in=stream.n,
        unique_in_kafka=len(got_ids & stream.ids()),
        missing_events=len(ids - got_ids),
        alerts_expected=len(expected) if sub is not None else None,
        alerts_received=len(received & expected) if sub is not None else None,
        unexpected_alerts=len(received - expected),
        dup_events=events.duplicates,
        dup_alerts=sub.stats.duplicates if sub is not None else 0,
        recovery_s=None if recovery_s is None else round(recovery_s, 1),
        notes=notes,
    )


def wait_drained(edge: ScriptedEdge, since: float, what: str) -> float:
    """Seconds from ``since`` until the edge's outbox is empty (everything acknowledged through
    Kafka); fails the scenario after :data:`DRAIN_TIMEOUT_S`."""
    if not edge.wait("drained", DRAIN_TIMEOUT_S):
        raise AssertionError(f"{what}: outbox not drained in {DRAIN_TIMEOUT_S:.0f} s "
                             f"(emitted {edge.emitted()}, depth {edge.outbox.depth()})")  # fmt: skip
    return time.monotonic() - since


def rate_for(n: int, seconds: float) -> float:
    """Events per second so that ``n`` events take about ``seconds``."""
    return max(2.0, n / seconds)
