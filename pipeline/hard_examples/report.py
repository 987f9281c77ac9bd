"""``pipeline report hard-examples``: what the hard-example dataset says, per camera and model.

For each camera and edge model version (the events' ``det``):

- per time bucket (UTC day or hour): examples, disagreements (contradicted + missed_label),
  sampled agreements, and the estimated disagreement rate among escalated events,
  ``d / (d + a / agreement_rate)`` (agreements are only a sample; None when the rate is 0);
- the most confused pairs ``edge label -> cloud label`` ("background": the heavy model saw
  nothing of the edge's label) over the disagreements;
- the drops of the size caps (``labels/<site>/<cam>/<day>.counts.json``).

Writes ``report.json``, ``report.md`` and ``hard_examples.png`` (matplotlib, Agg backend).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pipeline.hard_examples.selection import DISAGREEMENTS


def load_records(dataset: Path) -> list[dict[str, Any]]:
    """Every record, from ``labels/<site>/<cam>/`` (and ``labels/<cam>/`` of older datasets)."""
    out = []
    for path in sorted((dataset / "labels").rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def load_drops(dataset: Path) -> dict[str, dict[str, int]]:
    drops: dict[str, Counter[str]] = defaultdict(Counter)
    for path in sorted((dataset / "labels").rglob("*.counts.json")):
        counts = json.loads(path.read_text())
        drops[path.parent.relative_to(dataset / "labels").as_posix()].update(counts.get("dropped", {}))
    return {cam: dict(c) for cam, c in drops.items()}


def bucket_of(ts_ms: int, bucket: str) -> str:
    t = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%d") if bucket == "day" else t.strftime("%Y-%m-%dT%H:00Z")


def confusion_pairs(rec: dict[str, Any]) -> list[tuple[str, str]]:
    edge = rec["edge"]["label"]
    if rec["kind"] == "contradicted":
        return [(edge, rec["cloud"]["label"])]
    if rec["kind"] == "missed_label":
        return [(edge, m) for m in rec["missed_labels"]]
    return []


def estimated_rate(disagreements: int, agreements: int, rate: float) -> float | None:
    if rate <= 0:
        return None
    total = disagreements + agreements / rate
    return round(disagreements / total, 4) if total else None


def build_report(records: list[dict[str, Any]], bucket: str = "day", top: int = 5) -> dict[str, Any]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r.get("site", ""), r["cam"], r["edge"]["det"])].append(r)
    out: list[dict[str, Any]] = []
    for (site, cam, det), recs in sorted(groups.items()):
        buckets: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in recs:
            buckets[bucket_of(r["ts"], bucket)].append(r)
        series = []
        for b, rs in sorted(buckets.items()):
            d = sum(r["kind"] in DISAGREEMENTS for r in rs)
            a = sum(r["kind"] == "agreement" for r in rs)
            rate = min((r["agreement_rate"] for r in rs), default=0.0)
            series.append({"bucket": b, "examples": len(rs), "disagreements": d, "agreements_sampled": a,
                           "agreement_rate": rate, "disagreement_rate": estimated_rate(d, a, rate)})  # fmt: skip
        pairs = Counter(p for r in recs for p in confusion_pairs(r))
        out.append({
            "site": site,
            "cam": cam,
            "model": det,
            "examples": len(recs),
            "by_kind": dict(Counter(r["kind"] for r in recs)),
            "series": series,
            "confused": [{"edge": e, "cloud": c, "count": n} for (e, c), n in pairs.most_common(top)],
        })  # fmt: skip
    overall = Counter(p for r in records for p in confusion_pairs(r))
    return {
        "bucket": bucket,
        "examples": len(records),
        "groups": out,
        "confused": [{"edge": e, "cloud": c, "count": n} for (e, c), n in overall.most_common(top)],
    }


def camera_name(group: dict[str, Any]) -> str:
    """``site/cam`` (``cam`` alone for records of datasets written before sites were recorded)."""
    return f"{group['site']}/{group['cam']}" if group.get("site") else str(group["cam"])


def _markdown(rep: dict[str, Any], drops: dict[str, dict[str, int]]) -> str:
    header = "| camera | model | bucket | examples | disagreements | agreements (sampled) | est. disagreement rate |"
    lines = [f"# Hard examples: {rep['examples']} records", "", header, "|---|---|---|---|---|---|---|"]
    for g in rep["groups"]:
        for s in g["series"]:
            rate = "n/a" if s["disagreement_rate"] is None else f"{s['disagreement_rate']:.1%}"
            lines.append(f"| {camera_name(g)} | {g['model']} | {s['bucket']} | {s['examples']} | {s['disagreements']} |"
                         f" {s['agreements_sampled']} | {rate} |")  # fmt: skip
    lines += ["", "## Most confused (edge -> cloud)", ""]
    lines += [f"- {c['edge']} -> {c['cloud']}: {c['count']}" for c in rep["confused"]] or ["- none"]
    lines += ["", "## Dropped by the size caps", ""]
    lines += [f"- {cam}: {d}" for cam, d in sorted(drops.items()) if d] or ["- none"]
    return "\n".join(lines) + "\n"


def _plot(rep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for g in rep["groups"]:
        pts = [(s["bucket"], s["disagreement_rate"]) for s in g["series"] if s["disagreement_rate"] is not None]
        if pts:
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{camera_name(g)} {g['model']}")
    ax1.set_title("estimated disagreement rate")
    ax1.set_ylim(0, 1)
    ax1.set_xlabel(rep["bucket"])
    if any(g["series"] for g in rep["groups"]):
        ax1.legend(fontsize=7)
    conf = rep["confused"]
    ax2.barh([f"{c['edge']} -> {c['cloud']}" for c in conf][::-1], [c["count"] for c in conf][::-1])
    ax2.set_title("most confused (edge -> cloud)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(dataset: Path, out: Path, bucket: str = "day") -> dict[str, Any]:
    records = load_records(dataset)
    rep = build_report(records, bucket)
    drops = load_drops(dataset)
    rep["dropped"] = drops
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(rep, drops))
    _plot(rep, out / "hard_examples.png")
    return rep
