"""Rows for the benchmark table, the detailed ``accuracy.md``, and the plots a person looks at."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.accuracy.detection_metrics import DetectionScore
from benchmarks.accuracy.mot_scoring import TrackingScore
from benchmarks.accuracy.offline import REFERENCES, ModeResult, SpeedPoint
from benchmarks.table import Row, ratio_at_least

GROUP = "accuracy"
NAMES = {"ours": "ours", "bytetrack": "ByteTrack", "sort": "SORT", "ocsort": "OC-SORT", "norfair": "Norfair (Frigate)"}


def pct(x: float) -> float:
    return round(100.0 * x, 1)


def detection_rows(scores: dict[str, DetectionScore], frames: int) -> list[Row]:
    rows = []
    for name, s in scores.items():
        note = f"{frames} GT frames, full frame, {s.gt} GT boxes"
        rows.append(Row.make(f"person AP@0.5, {name}", pct(s.ap50), "%", group=GROUP, note=note))
        rows.append(
            Row.make(
                f"person precision @ min_score {s.min_score:g}, {name}",
                pct(s.precision),
                "%",
                group=GROUP,
                note=f"TP {s.tp}, FP {s.fp}",
            )
        )
        rows.append(Row.make(f"person recall @ min_score {s.min_score:g}, {name}", pct(s.recall), "%", group=GROUP))
    return rows


def tracking_rows(mode: ModeResult) -> list[Row]:
    ours = mode.scores.get("ours")
    if ours is None:
        return []
    best_name, best = mode.best_reference("idf1")
    label = f"best reference ({NAMES.get(best_name, best_name)})"
    note = f"{len(mode.frames)} frames; references on the same detections"
    rows = [
        Row.make(
            f"IDF1, ours, {mode.name}",
            pct(ours.idf1),
            "%",
            baseline=pct(best) if best else None,
            baseline_label=label,
            target=ratio_at_least(1.0) if best else None,
            group=GROUP,
            note=note,
        )
    ]
    best_sw = min((s.id_switches for n, s in mode.scores.items() if n in REFERENCES), default=None)
    rows.append(
        Row.make(
            f"ID switches, ours, {mode.name}",
            ours.id_switches,
            baseline=best_sw,
            baseline_label="fewest of the references",
            group=GROUP,
        )
    )
    best_mota = max((s.mota for n, s in mode.scores.items() if n in REFERENCES), default=None)
    rows.append(
        Row.make(
            f"MOTA, ours, {mode.name}",
            pct(ours.mota),
            "%",
            baseline=pct(best_mota) if best_mota is not None else None,
            baseline_label="best MOTA of the references",
            group=GROUP,
        )
    )
    if "ours" in mode.hota:
        best_h = max((h["HOTA"] for n, h in mode.hota.items() if n in REFERENCES), default=None)
        rows.append(
            Row.make(
                f"HOTA, ours, {mode.name}",
                pct(mode.hota["ours"]["HOTA"]),
                "%",
                baseline=pct(best_h) if best_h is not None else None,
                baseline_label="best HOTA of the references",
                group=GROUP,
            )
        )
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def tracking_markdown(modes: Sequence[ModeResult]) -> str:
    out = []
    for m in modes:
        out.append(f"\n#### Tracking, {m.name} ({len(m.frames)} frames scored)\n")
        out.append(
            "| tracker | IDF1 % | MOTA % | HOTA % | AssA % | ID sw | frag | MT | PT | ML | recall % | precision % |"
            " track ids |"
        )
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, s in m.scores.items():
            h = m.hota.get(name, {})
            hota = _fmt(100 * h["HOTA"]) if h else "-"
            assa = _fmt(100 * h["AssA"]) if h else "-"
            out.append(
                f"| {NAMES.get(name, name)} | {pct(s.idf1)} | {pct(s.mota)} | {hota} | {assa} | {s.id_switches} |"
                f" {s.fragmentations} | {s.mostly_tracked} | {s.partially_tracked} | {s.mostly_lost} |"
                f" {pct(s.recall)} | {pct(s.precision)} | {s.track_ids} |"
            )
        best_name, best = m.best_reference()
        if "ours" in m.scores and best:
            out.append(
                f"\nours / best reference ({NAMES.get(best_name, best_name)}) IDF1: {m.scores['ours'].idf1 / best:.2f}"
            )
    return "\n".join(out) + "\n"


def speed_markdown(points: Sequence[SpeedPoint]) -> str:
    out = [
        "\n#### Speed next to accuracy (detector on full frames, our tracker)\n",
        "| variant | detect fps | detector ms/frame (p50) | IDF1 % | MOTA % | recall % | ID sw |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        out.append(
            f"| {p.variant} | {p.detect_fps:g} | {p.ms_per_frame:.0f} | {pct(p.idf1)} | {pct(p.mota)} |"
            f" {pct(p.recall)} | {p.id_switches} |"
        )
    return "\n".join(out) + "\n"


def detection_markdown(scores: dict[str, DetectionScore]) -> str:
    out = [
        "\n#### Person detection (every GT frame, full frame, IoU >= 0.5)\n",
        "| variant | AP@0.5 % | precision % @ min_score | recall % @ min_score | TP | FP | GT boxes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in scores.items():
        out.append(f"| {name} | {pct(s.ap50)} | {pct(s.precision)} | {pct(s.recall)} | {s.tp} | {s.fp} | {s.gt} |")
    return "\n".join(out) + "\n"


def plot_timeline(score: TrackingScore, title: str, path: Path) -> Path:
    """Per GT identity, the track id that covered it frame by frame: breaks show as colour changes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gids = sorted(score.timeline)
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(gids) + 1.4))
    cmap = plt.get_cmap("tab20")
    palette = [cmap(i) for i in range(20) if i not in (14, 15)]  # tab20's greys would read as "missed"
    for row, gid in enumerate(gids):
        seq = score.timeline[gid]
        start = 0
        for k in range(1, len(seq) + 1):
            if k == len(seq) or seq[k][1] != seq[start][1] or seq[k][0] - seq[k - 1][0] > 3:
                f0, tid = seq[start]
                f1 = seq[k - 1][0]
                color = "#dddddd" if tid < 0 else palette[tid % len(palette)]
                ax.barh(row, f1 - f0 + 1, left=f0, color=color, edgecolor="white", linewidth=0.4)
                if tid >= 0 and f1 - f0 >= 12:
                    ax.text((f0 + f1) / 2, row, str(tid), ha="center", va="center", fontsize=7)
                start = k
    ax.set_yticks(range(len(gids)), [f"person {g}" for g in gids])
    ax.set_xlabel("frame (grey: missed; a colour change is a new track id)")
    ax.set_title(title, fontsize=10)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_detection(scores: dict[str, DetectionScore], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for name, s in scores.items():
        ax.plot([c[1] for c in s.curve], [c[2] for c in s.curve], label=f"{name} (AP {pct(s.ap50)}%)")
        ax.scatter([s.recall], [s.precision], marker="o", s=25)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("person detection on PETS09-S2L1 frames 1-400 (dot: min_score)", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
