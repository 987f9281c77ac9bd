"""One alert per incident, with an id derived from the incident itself.

Alert id = ``"al-" + sha256("rule|site|cam|incident_key|occurrence")[:32]``, where
``occurrence`` counts how many times this incident has alerted (1 for the first). Reprocessing
the same events after a crash (at-least-once) therefore re-emits the *same* ids, which
consumers drop; nothing depends on wall-clock time.

The incident ledger (changelogged table, key ``rule|cam|incident``) holds
``{"n", "first", "last"}`` in event time. A firing alerts when the incident is new, or when it
has not fired for ``cooldown_s`` (then ``n`` grows); every firing slides ``last``, so a track that
stays present alerts once. Track-bound incidents are dropped when their track ends.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import MutableMapping
from typing import Any

from pipeline.cloud_stage.rules_engine import Firing
from pipeline.cloud_stage.verification import Verdict
from pipeline.operators.schema import Alert, Event
from pipeline.settings import RuleSettings


def alert_id(rule: str, site: str, cam: str, incident_key: str, occurrence: int) -> str:
    digest = hashlib.sha256(f"{rule}|{site}|{cam}|{incident_key}|{occurrence}".encode()).hexdigest()
    return f"al-{digest[:32]}"


def ledger_key(rule: str, cam: str, incident_key: str) -> str:
    return f"{rule}|{cam}|{incident_key}"


class IncidentLedger:
    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table

    def decide(self, firing: Firing, event: Event) -> tuple[int | None, str, dict[str, int] | None]:
        """``(occurrence or None, key, new entry or None)`` for a firing; writes nothing.

        The caller writes the entry (:meth:`commit`) only after the alert is acknowledged by
        Kafka, so a crash in between re-emits the alert (same id) instead of losing it.
        """
        key = ledger_key(firing.rule.id, event.cam, firing.incident_key)
        entry = self.table.get(key)
        cooldown_ms = int(firing.rule.cooldown_s * 1000)
        if entry is None:
            return 1, key, {"n": 1, "first": event.ts, "last": event.ts}
        n = int(entry["n"])
        if event.ts - int(entry["last"]) >= cooldown_ms:
            return n + 1, key, {"n": n + 1, "first": event.ts, "last": event.ts}
        if event.ts > int(entry["last"]):
            return None, key, {**entry, "last": event.ts}
        return None, key, None

    def commit(self, key: str, entry: dict[str, int] | None) -> None:
        if entry is not None:
            self.table[key] = entry

    def track_ended(self, rules: list[RuleSettings], event: Event) -> None:
        for rule in rules:
            key = ledger_key(rule.id, event.cam, f"track-{event.track}")
            if key in self.table:
                del self.table[key]


def make_alert(firing: Firing, event: Event, verdict: Verdict, occurrence: int) -> Alert:
    return Alert(
        id=alert_id(firing.rule.id, event.site, event.cam, firing.incident_key, occurrence),
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
        detail="; ".join(d for d in (firing.detail, verdict.detail) if d)[:200],
    )
