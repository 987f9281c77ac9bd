"""One alert per incident, with an id derived from the incident itself.

Alert id = :func:`pipeline.operators.dedupe.alert_id` over (rule, ``site/cam``, incident key,
the event time at which the incident opened). Reprocessing the same events after a crash
(at-least-once) therefore re-emits the *same* ids, which consumers drop; nothing depends on
wall-clock time.

The incident ledger (changelogged table, one key per incident ``rule|site/cam|track`` or
``rule|site/cam|zone``) holds ``{"first", "last"}`` in event time, with the semantics of
:class:`pipeline.operators.dedupe.IncidentLedger`: a hit alerts when its incident is new or has
been quiet for ``cooldown_s``; every hit is activity. The ledger is kept per key instead of as
one serialised ledger so each event writes one small changelog record. Entries of people whose tracks
ended (:mod:`pipeline.operators.person_links`) are dropped.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from pipeline.cloud_stage.rules_engine import Firing
from pipeline.cloud_stage.verification import Verdict
from pipeline.operators.dedupe import alert_id
from pipeline.operators.rules import RuleSpec, camera_key, state_key
from pipeline.operators.schema import Alert, Event


def incident_alert_id(rule_id: str, site: str, cam: str, incident_key: str, opened_ms: int) -> str:
    return alert_id(rule_id, camera_key(site, cam), incident_key, opened_ms)


class IncidentLedger:
    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table

    def decide(self, firing: Firing, event: Event) -> tuple[int | None, str, dict[str, int] | None]:
        """``(incident opened ms or None, key, new entry or None)`` for a hit; writes nothing.

        The caller writes the entry (:meth:`commit`) only after the alert is acknowledged by
        Kafka, so a crash in between re-emits the alert (same id) instead of losing it.
        """
        key = firing.incident_key
        entry = self.table.get(key)
        if entry is None or event.ts - int(entry["last"]) >= firing.rule.cooldown_ms:
            return event.ts, key, {"first": event.ts, "last": event.ts}
        if event.ts > int(entry["last"]):
            return None, key, {**entry, "last": event.ts}
        return None, key, None

    def commit(self, key: str, entry: dict[str, int] | None) -> None:
        if entry is not None:
            self.table[key] = entry

    def forget(self, specs: list[RuleSpec], cam: str, person: int) -> None:
        """Drop the incidents of a person the rules forgot (their last track ended a while ago)."""
        for spec in specs:
            if spec.kind == "count":
                continue  # camera-wide incident: ends by cooldown
            key = state_key(spec, cam, person)
            if key in self.table:
                del self.table[key]


def make_alert(firing: Firing, event: Event, verdict: Verdict, opened_ms: int) -> Alert:
    return Alert(
        id=incident_alert_id(firing.rule.id, event.site, event.cam, firing.incident_key, opened_ms),
        ts=int(time.time() * 1000),
        site=event.site,
        cam=event.cam,
        rule=firing.rule.id,
        event_id=event.id,
        event_ts=event.ts,
        track=event.track,
        label=event.label,
        box=event.box,
        edge_score=event.score,
        cloud_score=verdict.cloud_score,
        fused_score=round(verdict.fused_score, 4),
        verification=verdict.verification,
        model=verdict.model,
        detail="; ".join(d for d in (firing.hit.detail, verdict.detail) if d)[:200],
    )
