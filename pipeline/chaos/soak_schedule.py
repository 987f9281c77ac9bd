"""The soak's fault schedule: seeded, so one seed always gives the same faults at the same times.

Pure (no processes, no clocks): :func:`make_schedule` draws the faults of a run from a
:class:`random.Random` seeded with ``SoakPlan.seed``. Gaps between faults are log-uniform between
``min_gap_s`` and ``max_gap_s`` (many within seconds of each other, some tens of seconds
apart). A fault is, with probability ``follow_up_p``, followed by a *follow-up* of the same kind
that lands 0.3-4 s after the component was started again: on the restarted process itself
(a kill during its start-up, i.e. during the consumer group's rebalance or the bridge's
re-subscription) or on another member of its group while that rebalance runs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal["worker", "bridge", "mosquitto", "model-server", "link"]
KINDS: tuple[FaultKind, ...] = ("worker", "bridge", "mosquitto", "model-server", "link")

# How long a component stays down before it is started again (s), per kind.
DOWN_S: dict[FaultKind, tuple[float, float]] = {
    "worker": (0.2, 6.0),
    "bridge": (0.2, 6.0),
    "mosquitto": (0.5, 4.0),
    "model-server": (1.0, 10.0),
    "link": (1.0, 12.0),
}
# When a follow-up lands, after the component's restart began (s).
FOLLOW_UP_S = (0.3, 4.0)


@dataclass(frozen=True)
class SoakPlan:
    duration_s: float  # faults are injected during this time; the stream lasts as long
    seed: int = 1
    workers: int = 3  # Faust workers in one consumer group
    bridges: int = 2  # bridges on one shared subscription
    cams: int = 4
    rate_per_s: float = 6.0  # events per second, all cameras together
    min_gap_s: float = 1.0
    max_gap_s: float = 25.0
    follow_up_p: float = 0.25
    model_server: bool = True  # the heavy model on the path (escalation always), with outages
    # Go on past duration_s (on the same seeded schedule) until this many kills were injected.
    min_kills: dict[FaultKind, int] = field(default_factory=dict)
    weights: dict[FaultKind, float] = field(
        default_factory=lambda: {"worker": 0.45, "bridge": 0.27, "mosquitto": 0.1, "model-server": 0.06, "link": 0.12}
    )

    @property
    def horizon_s(self) -> float:
        """How far the schedule reaches: past duration_s when minimum kill counts may need it."""
        return self.duration_s * (4 if self.min_kills else 1)

    @property
    def events(self) -> int:
        """Events in the stream, a whole number of tracks (3 events) per camera: it lasts
        duration_s; with minimum kill counts it goes on (the same ids) until they are reached."""
        n = int(self.horizon_s * self.rate_per_s)
        return max(3 * self.cams, n - n % (3 * self.cams))


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the soak began (a follow-up: earliest time)
    kind: FaultKind
    target: int  # which worker / bridge (0 for single components); -1: any that is up
    down_s: float  # how long it stays down before it is started again
    follow_up: bool = False  # lands FOLLOW_UP_S after the previous fault's restart began
    delay_s: float = 0.0  # for a follow-up: the delay after that restart began
    same_target: bool = True  # a follow-up on the restarted process itself, or on another member


def make_schedule(plan: SoakPlan) -> list[Fault]:
    """Every fault of the run by ``at_s``; a follow-up comes right after the fault it follows."""
    rng = random.Random(plan.seed)  # noqa: S311 - a reproducible schedule, not a secret
    kinds = [k for k in KINDS if plan.weights.get(k, 0) > 0 and (plan.model_server or k != "model-server")]
    weights = [plan.weights[k] for k in kinds]
    out: list[Fault] = []
    t = rng.uniform(plan.min_gap_s, 2 * plan.min_gap_s + 2)  # let the stream start first
    lo, hi = math.log(plan.min_gap_s), math.log(plan.max_gap_s)
    while t < plan.horizon_s:
        kind = rng.choices(kinds, weights)[0]
        members = {"worker": plan.workers, "bridge": plan.bridges}.get(kind, 1)
        down = rng.uniform(*DOWN_S[kind])
        out.append(Fault(round(t, 2), kind, rng.randrange(members), round(down, 2)))
        if rng.random() < plan.follow_up_p:
            same = members == 1 or rng.random() < 0.5
            out.append(Fault(round(t + down, 2), kind, -1, round(rng.uniform(*DOWN_S[kind]), 2), follow_up=True,
                             delay_s=round(rng.uniform(*FOLLOW_UP_S), 2), same_target=same))  # fmt: skip
        t += math.exp(rng.uniform(lo, hi))
    return out


def count_by_kind(faults: list[Fault]) -> dict[str, int]:
    return {k: sum(1 for f in faults if f.kind == k) for k in KINDS}
