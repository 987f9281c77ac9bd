"""Per-camera edge score thresholds recalibrated against the cloud model's verdicts.

The hard-example dataset holds, per escalated edge event, the edge's score and the heavy model's
verdict: ``contradicted`` (the cloud sees no such object: a false positive of the edge) and,
verified, ``missed_label`` (always kept) and ``agreement`` (kept with probability
``agreement_rate``, so each stands for ``1 / agreement_rate`` events). Treating the cloud as the
reference, a threshold ``t`` keeps the events with ``score >= t``: weighted precision and recall
follow, and the suggested ``min_score`` is the ``t`` with the best F-beta.

What this cannot do: the dataset only holds events the edge reported, i.e. scores at or above the
camera's current threshold, so it can raise a threshold (fewer false alarms, measured recall
cost) but never show what a lower one would find. Lower a threshold by hand, collect, then
recalibrate. Cameras with too few examples or no contradictions keep their threshold.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VERIFIED_KINDS = ("agreement", "missed_label")


@dataclass(frozen=True, slots=True)
class Point:
    threshold: float
    precision: float
    recall: float
    f: float


@dataclass(frozen=True, slots=True)
class Suggestion:
    cam: str
    model: str
    examples: int
    contradicted: int
    lowest_score: float  # the lowest score seen: the camera's threshold was at most this
    suggested: float | None  # None: keep the current threshold (reason says why)
    reason: str
    at_lowest: Point | None
    at_suggested: Point | None
    curve: list[Point]
    site: str = ""  # "" for records of datasets written before sites were recorded

    @property
    def camera(self) -> str:
        return f"{self.site}/{self.cam}" if self.site else self.cam


def _weight(record: dict[str, Any]) -> float:
    if record["kind"] == "agreement":
        rate = float(record.get("agreement_rate") or 0)
        return 1.0 / rate if rate > 0 else 0.0
    return 1.0


def curve(records: list[dict[str, Any]], beta: float = 1.0) -> list[Point]:
    """Weighted precision / recall / F-beta at every distinct edge score (as threshold), ascending."""
    # Scores to 4 decimals: thresholds are published with that precision, and events carry no more.
    scored = sorted(((round(float(r["edge"]["score"]), 4), r["kind"] in VERIFIED_KINDS, _weight(r)) for r in records),
                    key=lambda x: x[0])  # fmt: skip
    positives = sum(w for _, pos, w in scored if pos)
    points: list[Point] = []
    kept_pos = positives
    kept_neg = sum(w for _, pos, w in scored if not pos)
    i = 0
    b2 = beta * beta
    while i < len(scored):
        t = scored[i][0]
        precision = kept_pos / (kept_pos + kept_neg) if kept_pos + kept_neg else 0.0
        recall = kept_pos / positives if positives else 0.0
        denom = b2 * precision + recall
        f = (1 + b2) * precision * recall / denom if denom else 0.0
        points.append(Point(t, round(precision, 4), round(recall, 4), round(f, 4)))
        while i < len(scored) and scored[i][0] == t:  # raising past t drops every event at t
            _, pos, w = scored[i]
            kept_pos, kept_neg = (kept_pos - w, kept_neg) if pos else (kept_pos, kept_neg - w)
            i += 1
    return points


def suggest(cam: str, model: str, records: list[dict[str, Any]], *, beta: float = 1.0,
            min_examples: int = 30, site: str = "") -> Suggestion:  # fmt: skip
    pts = curve(records, beta)
    contradicted = sum(r["kind"] == "contradicted" for r in records)
    lowest = min((float(r["edge"]["score"]) for r in records), default=0.0)
    base = {"site": site, "cam": cam, "model": model, "examples": len(records), "contradicted": contradicted,
            "lowest_score": round(lowest, 4), "curve": pts, "at_lowest": pts[0] if pts else None}  # fmt: skip
    if len(records) < min_examples:
        return Suggestion(**base, suggested=None, at_suggested=None,
                          reason=f"only {len(records)} examples (need {min_examples})")  # fmt: skip
    if contradicted == 0:
        return Suggestion(**base, suggested=None, at_suggested=None,
                          reason="the cloud contradicted nothing: no reason to raise it")  # fmt: skip
    best = max(pts, key=lambda p: (p.f, -p.threshold))  # ties: the lower threshold keeps more
    if best.threshold <= lowest:
        return Suggestion(**base, suggested=None, at_suggested=best,
                          reason="the current threshold already scores best")  # fmt: skip
    return Suggestion(**base, suggested=best.threshold, at_suggested=best,
                      reason=f"F{beta:g} {pts[0].f:.2f} -> {best.f:.2f}")  # fmt: skip


def suggest_all(records: list[dict[str, Any]], *, beta: float = 1.0, min_examples: int = 30) -> list[Suggestion]:
    """One suggestion per camera (site and id: two sites' ``cam-1`` are two cameras), from the
    records of the model version it reported last (a new model has other score statistics: older
    versions' records would mislead)."""
    by_cam: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_cam[(r.get("site", ""), r["cam"])].append(r)
    out = []
    for (site, cam), recs in sorted(by_cam.items()):
        model = max(recs, key=lambda r: r["ts"])["edge"]["det"]
        out.append(suggest(cam, model, [r for r in recs if r["edge"]["det"] == model], beta=beta,
                           min_examples=min_examples, site=site))  # fmt: skip
    return out


def write_outputs(suggestions: list[Suggestion], out: Path) -> None:
    """thresholds.json and thresholds.png (precision / recall / F per camera against the threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "thresholds.json").write_text(json.dumps([asdict(s) for s in suggestions], indent=1))
    n = max(1, len(suggestions))
    fig, axes = plt.subplots(n, 1, figsize=(7, 3 * n), squeeze=False)
    for ax, s in zip(axes[:, 0], suggestions, strict=False):
        xs = [p.threshold for p in s.curve]
        ax.plot(xs, [p.precision for p in s.curve], label="precision (cloud = truth)")
        ax.plot(xs, [p.recall for p in s.curve], label="recall of what the edge reports now")
        ax.plot(xs, [p.f for p in s.curve], label="F", linestyle="--")
        if s.suggested is not None:
            ax.axvline(s.suggested, color="k", linewidth=0.8)
        ax.set_title(f"{s.camera} ({s.model}): {s.examples} examples, {s.reason}", fontsize=9)
        ax.set_xlabel("edge min_score")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "thresholds.png", dpi=90)
    plt.close(fig)
