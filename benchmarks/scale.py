"""Scale: N simulated cameras on one edge process, each paced like a live camera.

``run_edge`` (in this process) with N cameras, all the sample clip (looping, realtime: a reader
thread per camera keeps only the newest frame) under different ids, motion gate on, default
``detect_fps`` (5) and detector threads. After a warm-up, counters are read over a fixed window:

- sampled fps per camera: frames taken at ``detect_fps`` (gate, then the detector on motion) per
  second per camera; keeping up means close to ``detect_fps``;
- detector runs per second per camera (the clip always has motion, so about the same);
- frames dropped: decoded frames overwritten before they were taken. The clip is 10 fps and the
  edge takes 5, so about half are skipped by design even when it keeps up; more means it lags;
- CPU: process CPU seconds / wall seconds / cores.

The knee: the most cameras that still get >= 90% of ``detect_fps``, stated per core.

Configurations, each over the same camera counts in the same run: the default (several cameras
share a pool of single-threaded interpreters, at most one per core: ``edge.detector_pool`` auto),
the baseline "one interpreter per camera" (``detector_pool: 0``, 2 threads each, 512 px: the
default before issue 18), the shared pool at 384 px, and both on OpenVINO in bfloat16 (speed
choices whose recall and IDF1 the accuracy benchmark reports).
"""

from __future__ import annotations

import os
import threading
import time

from benchmarks.harness import BenchResult, Context
from benchmarks.table import Row, at_least
from pipeline.edge_stage.runner import run_edge
from pipeline.metrics import Registry
from pipeline.settings import SAMPLE_CLIP, CameraSettings

GROUP = "scale"
KEEP_UP = 0.9


CONFIGS: dict[str, dict[str, object]] = {
    "shared pool": {},
    # the default before issue 18: 512 px, one 2-thread interpreter per camera
    "1 interpreter per camera": {"detector_pool": 0, "detector_input_size": 512, "detector_threads": 2},
    "shared pool, 384 px": {"detector_input_size": 384},
    # the same float file on OpenVINO in bfloat16 (the accuracy benchmark has its figures)
    "shared pool, OpenVINO bf16": {
        "detector_input_size": 512, "detector_runtime": "openvino", "detector_precision": "bf16",
    },
    "shared pool, 384 px, OpenVINO bf16": {
        "detector_input_size": 384, "detector_runtime": "openvino", "detector_precision": "bf16",
    },
}  # fmt: skip
BASELINE = "1 interpreter per camera"


def run_once(
    ctx: Context, cams: int, warm_s: float, window_s: float, edge: dict[str, object] | None = None
) -> dict[str, float]:
    cameras = [{"id": f"cam-{i + 1}", "source": str(SAMPLE_CLIP), "realtime": True, "loop": True} for i in range(cams)]
    settings = ctx.fresh_settings(
        f"sc{cams}", edge={"cameras": cameras, "ack_timeout_s": 3600.0, "final_ack_wait_s": 0.0, **(edge or {})}
    )
    m = Registry("edge")
    stop = threading.Event()
    thread = threading.Thread(target=run_edge, args=(settings, stop), kwargs={"metrics": m}, daemon=True)
    names = ("frames_read_total", "frames_sampled_total", "frames_detected_total", "frames_dropped_total")

    def snap() -> tuple[float, float, dict[str, float]]:
        return time.monotonic(), time.process_time(), {n: m.counter(n) for n in names}

    thread.start()
    try:
        time.sleep(warm_s)
        t0, c0, v0 = snap()
        time.sleep(window_s)
        t1, c1, v1 = snap()
    finally:
        stop.set()
        thread.join(timeout=60)
    wall = t1 - t0
    d = {n: v1[n] - v0[n] for n in names}
    return {
        "cams": cams,
        "sampled_fps_per_cam": d["frames_sampled_total"] / wall / cams,
        "detect_fps_per_cam": d["frames_detected_total"] / wall / cams,
        "read_fps_per_cam": d["frames_read_total"] / wall / cams,
        "dropped_share": d["frames_dropped_total"] / d["frames_read_total"] if d["frames_read_total"] else 0.0,
        "cpu_share": (c1 - c0) / wall / (os.cpu_count() or 1),
    }


def run(ctx: Context) -> BenchResult:
    counts = (1, 4, 8) if ctx.quick else (1, 2, 4, 8, 16)
    # the warm-up covers the shared pool's growth: it adds an interpreter after a 5 s window of
    # its runners busy >= 75 % (pipeline/edge_stage/detectors/runner_pool.py), ~5-8 s after start
    warm_s, window_s = (9.0, 6.0) if ctx.quick else (12.0, 30.0)
    target_fps = CameraSettings(id="x", source="x").detect_fps
    cores = os.cpu_count() or 1
    results: dict[str, list[dict[str, float]]] = {}
    for name, edge in CONFIGS.items():
        results[name] = []
        for n in counts:
            if n == 1 and name == BASELINE:
                continue  # one camera never uses the pool: the same as the default
            ctx.log(f"scale: {name}, {n} camera(s), {window_s:.0f} s window after {warm_s:.0f} s warm-up")
            r = run_once(ctx, n, warm_s, window_s, edge)
            ctx.log(
                f"   sampled {r['sampled_fps_per_cam']:.2f} fps/cam, detector {r['detect_fps_per_cam']:.2f} fps/cam,"
                f" dropped {r['dropped_share']:.0%} of decoded, CPU {r['cpu_share']:.0%}"
            )
            results[name].append(r)

    def knee(rs: list[dict[str, float]]) -> int:
        kept = [int(r["cams"]) for r in rs if r["sampled_fps_per_cam"] >= KEEP_UP * target_fps]
        return max(kept) if kept else 0

    base_knee = knee(results[BASELINE] or results["shared pool"])
    rows: list[Row] = []
    for name, rs in results.items():
        k = knee(rs)
        rows.append(
            Row.make(
                f"cameras kept at {target_fps:g} fps, per core, {name}",
                k / cores,
                "cams/core",
                baseline=base_knee / cores if name != BASELINE else None,
                baseline_label=BASELINE if name != BASELINE else "",
                target=at_least(4),
                group=GROUP,
                note=f"{k} of {[int(r['cams']) for r in rs]} cameras got >= {KEEP_UP:.0%} of {target_fps:g} fps on"
                f" {cores} cores" + ("" if k != max(counts) else "; the knee is beyond the largest count tried"),
            )
        )
    base = results["shared pool"][0]
    for name, rs in results.items():
        for r in rs:
            n = int(r["cams"])
            rows.append(
                Row.make(
                    f"{name}, {n} cam: sampled fps per camera",
                    r["sampled_fps_per_cam"],
                    "fps",
                    baseline=base["sampled_fps_per_cam"] if r is not base else None,
                    baseline_label="1 cam" if r is not base else "",
                    group=GROUP,
                    note=f"detector {r['detect_fps_per_cam']:.2f} fps/cam, dropped {r['dropped_share']:.0%}"
                    f" of decoded (50% by design at 5 of 10 fps); CPU {100 * r['cpu_share']:.0f}% of {cores} cores",
                )
            )
    knees = {name: knee(rs) for name, rs in results.items()}
    return BenchResult(
        rows, {"results": results["shared pool"], "by_config": results, "target_fps": target_fps,
               "knee": knees["shared pool"], "knees": knees}
    )  # fmt: skip
