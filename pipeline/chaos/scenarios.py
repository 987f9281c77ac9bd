"""Fault scenarios on real brokers and processes, each over a fixed :class:`ScriptedStream`.

Every scenario runs the stream through the edge's real outbox + publisher, Mosquitto, the
``pipeline bridge`` command, Tansu, the ``pipeline cloud`` worker and back over MQTT to an alert
subscriber, injects one kind of fault mid-stream, and returns a :class:`ScenarioResult`: events
in, unique event ids in Kafka, alert ids expected (computed from the stream) and received,
duplicates, lost (must be 0) and the recovery time (fault removed -> the edge outbox empty, i.e.
everything acknowledged through Kafka). ``pipeline chaos`` prints them as a table;
``tests/faults`` asserts on them with a smaller stream.

The scenarios live in :mod:`pipeline.chaos.crash_scenarios` (a process killed or stopped) and
:mod:`pipeline.chaos.link_scenarios` (a slow, half-open or lossy link), built from
:mod:`pipeline.chaos.scenario_steps`; this module is the catalogue both callers pick from by name,
and the table they print.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.chaos.crash_scenarios import (
    bridge_crash,
    bridge_pair_one_dies,
    cloud_worker_crash,
    edge_crash,
    kafka_restart,
    link_down,
    model_server_crash,
    mosquitto_crash,
)
from pipeline.chaos.link_scenarios import flaky_link, packet_loss
from pipeline.chaos.rig import ChaosEnv
from pipeline.chaos.scenario_steps import ScenarioResult

Scenario = Callable[[ChaosEnv, int], ScenarioResult]

SCENARIOS: dict[str, Scenario] = {
    "mosquitto-crash": mosquitto_crash,
    "link-down": link_down,
    "edge-crash": edge_crash,
    "bridge-crash": bridge_crash,
    "bridge-pair": bridge_pair_one_dies,
    "kafka-restart": kafka_restart,
    "worker-crash": cloud_worker_crash,
    "model-server-crash": model_server_crash,
    "flaky-link": flaky_link,
    "packet-loss": packet_loss,
}


def format_table(results: list[ScenarioResult]) -> str:
    def opt(v: object) -> str:
        return "-" if v is None else str(v)

    head = ("scenario", "events in", "unique in Kafka", "alerts expected", "alerts received",
            "dup events", "dup alerts", "lost", "recovery s")  # fmt: skip
    rows = [
        (r.name, str(r.events_in), str(r.unique_in_kafka), opt(r.alerts_expected), opt(r.alerts_received),
         str(r.dup_events), str(r.dup_alerts), str(r.lost), opt(r.recovery_s))
        for r in results
    ]  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]  # fmt: skip
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    for r in results:
        extra = list(r.notes)
        extra += [f"CHECK FAILED: {k}" for k, v in r.checks.items() if not v]
        if r.unexpected_alerts:
            extra.append(f"{r.unexpected_alerts} UNEXPECTED alert ids")
        if extra:
            lines.append(f"- {r.name}: " + "; ".join(extra))
    return "\n".join(lines)
