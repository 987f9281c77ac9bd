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


def run_once(ctx: Context, cams: int, warm_s: float, window_s: float) -> dict[str, float]:
    cameras = [{"id": f"cam-{i + 1}", "source": str(SAMPLE_CLIP), "realtime": True, "loop": True} for i in range(cams)]
    settings = ctx.fresh_settings(
        f"sc{cams}", edge={"cameras": cameras, "ack_timeout_s": 3600.0, "final_ack_wait_s": 0.0}
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
    counts = (1, 4) if ctx.quick else (1, 2, 4, 8, 16)
    warm_s, window_s = (3.0, 6.0) if ctx.quick else (6.0, 30.0)
    target_fps = CameraSettings(id="x", source="x").detect_fps
    cores = os.cpu_count() or 1
    results = []
    for n in counts:
        ctx.log(f"scale: {n} camera(s), {window_s:.0f} s window after {warm_s:.0f} s warm-up")
        r = run_once(ctx, n, warm_s, window_s)
        ctx.log(
            f"   sampled {r['sampled_fps_per_cam']:.2f} fps/cam, detector {r['detect_fps_per_cam']:.2f} fps/cam,"
            f" dropped {r['dropped_share']:.0%} of decoded, CPU {r['cpu_share']:.0%}"
        )
        results.append(r)
    kept = [r["cams"] for r in results if r["sampled_fps_per_cam"] >= KEEP_UP * target_fps]
    knee = max(kept) if kept else 0
    rows = [
        Row.make(
            f"cameras kept at {target_fps:g} fps, per core",
            knee / cores,
            "cams/core",
            target=at_least(4),
            group=GROUP,
            note=f"{knee} of {list(counts)} cameras got >= {KEEP_UP:.0%} of {target_fps:g} fps on {cores} cores"
            + ("" if knee != max(counts) else "; the knee is beyond the largest count tried"),
        ),
    ]
    base = results[0]
    for r in results:
        n = int(r["cams"])
        rows.append(
            Row.make(
                f"{n} cam: sampled fps per camera",
                r["sampled_fps_per_cam"],
                "fps",
                baseline=base["sampled_fps_per_cam"] if n > 1 else None,
                baseline_label="1 cam" if n > 1 else "",
                group=GROUP,
                note=f"detector {r['detect_fps_per_cam']:.2f} fps/cam, dropped {r['dropped_share']:.0%}"
                f" of decoded (50% by design at 5 of 10 fps)",
            )
        )
        rows.append(Row.make(f"{n} cam: CPU (share of {cores} cores)", 100 * r["cpu_share"], "%", group=GROUP))
    return BenchResult(rows, {"results": results, "target_fps": target_fps, "knee": knee})
