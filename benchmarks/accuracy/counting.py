"""The scene's rules, and what they give on the ground truth: the figures the pipeline is held to.

Two GT figures for each rule. **Geometric** (:func:`count_crossings`, :func:`zone_stays`): what
the people did: each move of a GT trajectory's feet from one frame to the next that changes side
of a line between its ends is a crossing, each run of frames inside the zone a stay, timed from
its first to its last frame. **The rule on GT tracks** (:func:`rule_hits_on_tracks`): the
product's own rules (:func:`pipeline.operators.rules.evaluate`, the same
state machines the cloud worker runs, hysteresis included) applied to *perfect tracks*: each GT
identity is one track, every GT frame an observation of its box (anchor = bottom-centre, the
"feet"), time on the file's clock (frame index x 100 ms at vtest.avi's declared 10 fps, as the
edge stamps events), score 1. The pipeline's counts are then compared with what the same rule
says about the true trajectories, so the difference is what detection, tracking and the sparse
event stream cost, not a different definition of a crossing or a stay (counting crossings
without the rule's hysteresis band would count a person first seen 9 px from a line, and time a
stay from the first pixel inside a zone).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.accuracy.data import FRAME_H, FRAME_W, PxBox
from pipeline.operators.assignment import linear_assignment
from pipeline.operators.geometry import Point, Segment, crossing, point_in_polygon
from pipeline.operators.rules import Observation, RuleSpec, evaluate, state_key
from pipeline.operators.schema import EventType
from pipeline.settings import RuleSettings

# The scene's rules (normalised coordinates). PETS09-S2L1 view 001: people cross the plaza
# left-right and up-down; both lines and the zone are crossed by several GT identities.
LINES: dict[str, Segment] = {
    "line-centre": ((0.5, 0.2), (0.5, 1.0)),  # vertical, drawn downwards
    "line-plaza": ((0.0, 0.6), (1.0, 0.6)),  # horizontal, drawn left to right
}
ZONE: tuple[Point, ...] = ((0.3, 0.35), (0.7, 0.35), (0.7, 0.75), (0.3, 0.75))
DWELL_S = 5.0
DIRECTIONS = ("left_to_right", "right_to_left")
FRAME_MS = 100


def rules() -> list[dict[str, Any]]:
    """Presence, a zone, a dwell and two lines per direction (cooldown 0: every crossing counts)."""
    out: list[dict[str, Any]] = [
        {"id": "person-present", "kind": "presence", "labels": ["person"]},
        {"id": "zone-centre", "kind": "zone", "labels": ["person"], "zone": list(ZONE), "cooldown_s": 0},
        {
            "id": "dwell-centre",
            "kind": "dwell",
            "labels": ["person"],
            "zone": list(ZONE),
            "dwell_s": DWELL_S,
            "cooldown_s": 0,
        },
    ]
    for name, seg in LINES.items():
        for d in DIRECTIONS:
            out.append(
                {
                    "id": f"{name}.{d}",
                    "kind": "line",
                    "labels": ["person"],
                    "line": list(seg),
                    "direction": d,
                    "cooldown_s": 0,
                }
            )
    return out


def rule_hits_on_tracks(
    rule_dicts: Sequence[Mapping[str, Any]],
    tracks: Mapping[int, Sequence[tuple[int, PxBox]]],
    size: tuple[int, int] = (FRAME_W, FRAME_H),
) -> Counter[str]:
    """How often each rule fires on ``tracks`` (id -> ``(frame, pixel box)`` in frame order),
    evaluated as the cloud does: one state per rule and track, every observation in time order."""
    specs = [RuleSpec.from_settings(RuleSettings(**r)) for r in rule_dicts]
    w, h = size
    observations = sorted(
        (frame, tid, n, (b[0] / w, b[1] / h, b[2] / w, b[3] / h))
        for tid, seq in tracks.items()
        for n, (frame, b) in enumerate(seq)
    )
    state: dict[str, Any] = {}
    hits: Counter[str] = Counter()
    for frame, tid, n, box in observations:
        etype: EventType = "track_started" if n == 0 else "track_updated"
        obs = Observation("gt", tid, "person", 1.0, box, frame * FRAME_MS, etype, f"gt-{tid}-{frame}")
        for spec in specs:
            key = state_key(spec, "gt", tid)
            res = evaluate(spec, obs, state.get(key))
            if res.hit is not None:
                hits[spec.id] += 1
            if res.state is None:
                state.pop(key, None)
            else:
                state[key] = res.state
    return hits


def count_crossings(path: Sequence[Point], line: Segment) -> dict[str, int]:
    """Geometric crossings of ``line`` by consecutive points of one trajectory, per direction."""
    out = dict.fromkeys(DIRECTIONS, 0)
    for p, q in itertools.pairwise(path):
        d = crossing(line, p, q)
        if d is not None:
            out[d] += 1
    return out


@dataclass(frozen=True, slots=True)
class ZoneStays:
    entries: int
    dwells: int  # stays of at least dwell_s
    durations: tuple[float, ...]  # seconds, first to last sample inside, of every stay


def stay_spans(samples: Sequence[tuple[float, Point]], zone: Sequence[Point]) -> list[tuple[float, float]]:
    """``(first, last)`` time inside ``zone`` of each run of samples (``(t_s, anchor)``, in time order)."""
    runs: list[list[float]] = []
    inside = False
    for t, p in samples:
        now = point_in_polygon(p, zone)
        if now and not inside:
            runs.append([t, t])
        elif now:
            runs[-1][1] = t
        inside = now
    return [(a, b) for a, b in runs]


def zone_stays(samples: Sequence[tuple[float, Point]], zone: Sequence[Point], dwell_s: float) -> ZoneStays:
    """Geometric stays of one trajectory (``(t_s, anchor)`` in time order) inside ``zone``."""
    runs = stay_spans(samples, zone)
    durations = tuple(b - a for a, b in runs)
    return ZoneStays(len(runs), sum(1 for d in durations if d >= dwell_s), durations)


def gt_feet(trajectories: Mapping[int, Sequence[tuple[int, PxBox]]]) -> dict[int, list[tuple[float, Point]]]:
    """Each GT identity's ``(t_s, feet)`` samples: time on the file's clock, box bottom-centre normalised."""
    return {
        g: [(i * FRAME_MS / 1000, ((b[0] + b[2]) / 2 / FRAME_W, b[3] / FRAME_H)) for i, b in seq]
        for g, seq in trajectories.items()
    }


def gt_stay_spans(trajectories: Mapping[int, Sequence[tuple[int, PxBox]]]) -> dict[int, list[tuple[float, float]]]:
    """Each GT identity's stays in :data:`ZONE` (seconds on the file's clock, feet as anchors)."""
    return {g: stay_spans(samples, ZONE) for g, samples in gt_feet(trajectories).items()}


@dataclass(frozen=True, slots=True)
class DwellMatch:
    """Dwell alerts against the GT stays they belong to, at the resolution a sampled pipeline has:
    a stay more than ``step_s`` over the threshold must raise one alert (``over``), one more than
    ``step_s`` under it none, and one within ``step_s`` of it may go either way (``borderline``)."""

    over: int
    over_alerted: int
    borderline: int
    borderline_alerted: int
    wrong: int  # alerts on a stay clearly under the threshold, on no stay, or a second one on a stay


@dataclass(frozen=True, slots=True)
class DwellAlert:
    """One dwell alert as the matching sees it: its time (s, file clock) and how well its event
    matches each GT identity (IoU of the event's box with that identity's box at that frame; the
    track's identity over its life gets a small floor, for an event box that overlaps no GT box)."""

    t: float
    affinity: Mapping[int, float]


_NO_PAIR = 1e6


def match_dwell_alerts(
    stays: Mapping[int, Sequence[tuple[float, float]]],
    alerts: Sequence[DwellAlert],
    dwell_s: float = DWELL_S,
    step_s: float = 0.2,
    grace_s: float = 1.0,
) -> DwellMatch:
    """One-to-one matching (minimum total ``1 - affinity``) of dwell alerts to GT stays: an alert
    can take a stay of an identity it has affinity with that contains its time, up to ``grace_s``
    after the stay's last sample inside (a dwell reached only at the exit fires there: one
    detection step and a hysteresis band later). One to one, because two people standing together
    make two overlapping stays and two alerts whose boxes both touch both people."""
    cells = [(g, k, a, b) for g, spans in stays.items() for k, (a, b) in enumerate(spans)]
    cost = [
        [1.0 - al.affinity[g] if al.affinity.get(g, 0.0) > 0 and a <= al.t <= b + grace_s else _NO_PAIR
         for g, _, a, b in cells]
        for al in alerts
    ]  # fmt: skip
    taken = {c for r, c in linear_assignment(cost) if cost[r][c] < _NO_PAIR} if alerts and cells else set()
    wrong = len(alerts) - len(taken)
    over = over_alerted = borderline = borderline_alerted = 0
    for c, (_, _, a, b) in enumerate(cells):
        if b - a > dwell_s + step_s:
            over += 1
            over_alerted += int(c in taken)
        elif b - a >= dwell_s - step_s:
            borderline += 1
            borderline_alerted += int(c in taken)
        else:
            wrong += int(c in taken)
    return DwellMatch(over, over_alerted, borderline, borderline_alerted, wrong)


@dataclass(frozen=True, slots=True)
class GtCounts:
    """Per rule (``line.direction``, ``zone-centre``, ``dwell-centre``): the geometric GT figure
    and the rule's figure on the GT tracks. (The GT stays near the dwell threshold are counted
    by :func:`match_dwell_alerts`.)"""

    geometric: dict[str, int]
    by_rule: dict[str, int]


def gt_counts(trajectories: Mapping[int, Sequence[tuple[int, PxBox]]]) -> GtCounts:
    feet = gt_feet(trajectories)
    geometric: Counter[str] = Counter()
    for name, seg in LINES.items():
        for samples in feet.values():
            geometric.update({f"{name}.{d}": n for d, n in count_crossings([p for _, p in samples], seg).items()})
    stays = [zone_stays(samples, ZONE, DWELL_S) for samples in feet.values()]
    geometric["zone-centre"] = sum(s.entries for s in stays)
    geometric["dwell-centre"] = sum(s.dwells for s in stays)
    on_tracks = rule_hits_on_tracks(rules(), trajectories)
    return GtCounts(dict(geometric), {k: on_tracks[k] for k in geometric})
