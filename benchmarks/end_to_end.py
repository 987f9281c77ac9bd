"""End to end: capture time -> alert received by an MQTT subscriber, on the local stack.

As the demo runs it: Mosquitto, Tansu and the model server (the local stack), ``pipeline bridge``
and ``pipeline cloud`` as child processes, the edge in this process on the sample clip paced as
a live camera (realtime, frames dropped when slow), and an :class:`AlertSubscriber` on
``<prefix>/alerts``. Latency per alert = its arrival at the subscriber - the capture time of
the event that raised it (``alert.event_ts``, stamped by the edge when the frame was read).

Three times, each with its own topics, bridge and cloud worker: ``cloud.escalation = never``
(the edge score alone decides), ``track_started`` (the default: each new track's crop goes to the
heavy model on the model server before the rules run), and ``track_started`` with the served
model pinned to version 1 (512 px, the model before the re-export: the same-run baseline).
"""

from __future__ import annotations

import threading
from pathlib import Path

from benchmarks.harness import BenchResult, Context, bridge_and_cloud, cut_clip, quantile
from benchmarks.table import Row, at_most
from pipeline.alerts_subscriber import AlertSubscriber
from pipeline.edge_stage.runner import run_edge
from pipeline.settings import SAMPLE_CLIP

GROUP = "end to end"
TARGET_MS = {"never": 250.0, "track_started": 500.0}


def run_once(
    ctx: Context, escalation: str, clip: Path, model_version: int | None = None
) -> tuple[list[float], dict[str, int]]:
    camera = {"id": "cam-1", "source": str(clip), "realtime": True, "loop": False}
    settings = ctx.fresh_settings(
        f"e{escalation[:2]}",
        edge={"cameras": [camera], "final_ack_wait_s": 10.0},
        cloud={"escalation": escalation},
        model_server={"model_version": model_version},
    )
    bridge, cloud, run = bridge_and_cloud(settings)
    ctx.log(f"end to end ({escalation}): starting bridge and cloud worker (logs in {run})")
    with bridge, cloud, AlertSubscriber(settings, f"{settings.mqtt.topic_prefix}-alerts") as subscriber:
        ctx.log(f"end to end ({escalation}): edge on {clip.name}, realtime")
        summary = run_edge(settings, threading.Event())
        subscriber.wait_quiet(quiet_s=3.0, timeout_s=60.0)
    lat = [float(x) for x in subscriber.stats.latencies_ms()]
    info = {
        "alerts": len(lat),
        "duplicates": subscriber.stats.duplicates,
        "tracks": summary.tracks,
        "events": summary.events_published,
        "frames_dropped": summary.frames_dropped,
    }
    ctx.log(f"   {len(lat)} alerts, p50 {quantile(lat, 0.5) or 0:.0f} ms p95 {quantile(lat, 0.95) or 0:.0f} ms; {info}")
    return lat, info


def run(ctx: Context) -> BenchResult:
    clip = cut_clip(ctx.work_dir / "clip_10s.mp4", 10.0) if ctx.quick else SAMPLE_CLIP
    rows: list[Row] = []
    latency_ms: dict[str, list[float]] = {}
    runs: dict[str, list[dict[str, int]]] = {}
    series: dict[str, object] = {"latency_ms": latency_ms, "runs": runs}
    old_model: list[float] = []
    for escalation, version in (("never", None), ("track_started", None), ("track_started", 1)):
        lat: list[float] = []
        infos: list[dict[str, int]] = []
        for _ in range(1 if ctx.quick else 2):
            got, info = run_once(ctx, escalation, clip, version)
            lat += got
            infos.append(info)
        if version == 1:  # the served model before the re-export: the same-run baseline of the heavy rows
            old_model = lat
            latency_ms["escalation=track_started, model version 1"] = lat
            runs["track_started_v1"] = infos
            continue
        label = "no heavy model" if escalation == "never" else "heavy model on track start"
        n = len(lat)
        note = f"{n} alerts over {len(infos)} run(s) of {clip.name}"
        rows.append(
            Row.make(
                f"capture->alert p95, {label}",
                quantile(lat, 0.95),
                "ms",
                target=at_most(TARGET_MS[escalation]),
                group=GROUP,
                note=note,
            )
        )
        rows.append(Row.make(f"capture->alert p50, {label}", quantile(lat, 0.5), "ms", group=GROUP))
        rows.append(Row.make(f"capture->alert p99, {label}", quantile(lat, 0.99), "ms", group=GROUP))
        latency_ms[f"escalation={escalation}"] = lat
        runs[escalation] = infos
    rows.append(
        Row.make(
            "capture->alert p95, heavy model version 1 (512 px, before)",
            quantile(old_model, 0.95),
            "ms",
            baseline=next((r.value for r in rows if r.figure.endswith("p95, heavy model on track start")), None),
            baseline_label="version 2 (default)",
            group=GROUP,
            note=f"{len(old_model)} alerts; p50 {quantile(old_model, 0.5) or 0:.0f} ms",
        )
    )
    return BenchResult(rows, series)
