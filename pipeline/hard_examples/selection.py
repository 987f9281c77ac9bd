"""Which verified events become hard examples (pure: no I/O, no clock).

- ``contradicted``: the heavy model does not see the edge's label over the crop's centre;
- ``missed_label``: it sees an object of *another* label there (score >=
  ``hard_examples.other_label_min_score``) that the edge did not report for this track;
- ``agreement``: a sample of the rest, for balance: the events whose id hashes below
  ``hard_examples.agreement_rate`` (deterministic, so every worker and every replay agrees).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from pipeline.cloud_stage.verification import Verdict
from pipeline.operators.schema import Event

Kind = Literal["contradicted", "missed_label", "agreement"]
DISAGREEMENTS: tuple[Kind, ...] = ("contradicted", "missed_label")


@dataclass(frozen=True, slots=True)
class Selected:
    kind: Kind
    missed_labels: tuple[str, ...]
    cloud_label: str  # what the heavy model says the object is ("background": nothing)


def sampled(event_id: str, rate: float) -> bool:
    """Deterministic Bernoulli(rate) by event id."""
    if rate <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:8], "big")
    return h / 2**64 < rate


def select(ev: Event, verdict: Verdict, agreement_rate: float, other_label_min_score: float) -> Selected | None:
    if verdict.verification not in ("verified", "contradicted") or verdict.cloud_score is None:
        return None  # no second opinion: nothing to learn from
    central = sorted((d for d in verdict.detections if d.central), key=lambda d: -d.score)
    missed = tuple(sorted({d.label for d in central if d.label != ev.label and d.score >= other_label_min_score}))
    top = central[0].label if central and central[0].score >= other_label_min_score else "background"
    if verdict.verification == "contradicted":
        return Selected("contradicted", missed, top)
    if missed:
        return Selected("missed_label", missed, missed[0])
    if sampled(ev.id, agreement_rate):
        return Selected("agreement", (), ev.label)
    return None
