"""PNG plots of a run (matplotlib, Agg backend): latency CDFs, inference throughput vs batch
size, edge cost per frame by stage, and sampled fps per camera vs cameras. Each plot is drawn
only when the benchmark it needs ran; :func:`draw_all` returns the files written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

STAGE_ORDER = ("decode", "motion_gate", "detect", "track", "encode")
EDGE_RUNS = {
    "clip_on": "clip, gate on",
    "clip_off": "clip, gate off",
    "still_on": "still, gate on",
    "still_off": "still, gate off",
}


def _cdf(ax: Any, samples: Mapping[str, Sequence[float]], title: str) -> bool:
    drawn = False
    for label, xs in samples.items():
        if not xs:
            continue
        v = np.sort(np.asarray(xs, dtype=float))
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=f"{label} (n={len(v)})")
        drawn = True
    ax.set_title(title)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("share of events")
    ax.set_ylim(0, 1.01)
    if drawn:
        ax.set_xscale("log")
        ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, alpha=0.3)
    return drawn


def latency_cdf(series: Mapping[str, Any], out: Path) -> Path | None:
    panels = [
        (name, title, series[name].get("latency_ms", {}))
        for name, title in (
            ("end_to_end", "capture -> alert (end to end)"),
            ("bridge_throughput", "MQTT publish -> Kafka consumer (bridge)"),
            ("inference_batching", "per-event inference (burst)"),
        )
        if isinstance(series.get(name), Mapping) and series[name].get("latency_ms")
    ]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (_, title, samples) in zip(axes[0], panels, strict=True):
        _cdf(ax, samples, title)
    fig.tight_layout()
    path = out / "latency_cdf.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput_vs_batch(series: Mapping[str, Any], out: Path) -> Path | None:
    data = (series.get("inference_batching") or {}).get("throughput_vs_batch")
    if not data:
        return None
    sizes = sorted(int(k) for k in data)
    vals = [data[str(b)] for b in sizes]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(sizes, vals, marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.set_xlabel("batch size (images per Predict call)")
    ax.set_ylabel("images / s")
    ax.set_ylim(0, max(vals) * 1.2)
    ax.set_title("model server throughput vs batch size")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = out / "throughput_vs_batch.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def edge_cost_by_stage(series: Mapping[str, Any], out: Path) -> Path | None:
    stage_ms = (series.get("edge_cost") or {}).get("stage_ms")
    if not stage_ms:
        return None
    runs = [k for k in EDGE_RUNS if k in stage_ms]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    bottom = np.zeros(len(runs))
    for stage in STAGE_ORDER:
        vals = np.array([stage_ms[r].get(stage, 0.0) for r in runs])
        ax.bar([EDGE_RUNS[r] for r in runs], vals, bottom=bottom, label=stage)
        bottom += vals
    for i, total in enumerate(bottom):
        ax.annotate(f"{total:.1f} ms", (i, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("ms per sampled frame (mean)")
    ax.set_title("edge cost per frame by stage")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "edge_cost_by_stage.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scale_plot(series: Mapping[str, Any], out: Path) -> Path | None:
    data = series.get("scale") or {}
    results = data.get("results")
    if not results:
        return None
    cams = [r["cams"] for r in results]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(cams, [r["sampled_fps_per_cam"] for r in results], marker="o", label="sampled fps / camera")
    ax.plot(cams, [r["detect_fps_per_cam"] for r in results], marker="s", label="detector runs / s / camera")
    ax.axhline(data.get("target_fps", 5.0), color="grey", linestyle="--", label="detect_fps")
    ax.set_xscale("log", base=2)
    ax.set_xticks(cams, [str(c) for c in cams])
    ax.set_xlabel("cameras on one edge process")
    ax.set_ylabel("frames / s / camera")
    ax.set_ylim(0, None)
    ax.set_title("edge scale")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = out / "scale.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(series: Mapping[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    drawn = [f(series, out) for f in (latency_cdf, throughput_vs_batch, edge_cost_by_stage, scale_plot)]
    return [p for p in drawn if p is not None]
