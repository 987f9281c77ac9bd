"""Edge cost per frame by stage, frames per second per core with the motion gate on and off, the
cost of a gated-off frame, the edge's peak RSS, and the int8 vs fp32 detector.

The per-stage loop below is the camera worker's frame step (``pipeline/edge_stage/frame_step.py``) with a
timer around each stage, on a file read as fast as it decodes (sampled at ``detect_fps`` by media
time, as ``pipeline edge`` does for non-realtime files):

- decode: ``Capture.next()`` (decodes every source frame, returns the sampled ones);
- motion gate: ``MotionGate.check``;
- detect: ``Detector.detect`` on the motion ROI (or the full frame);
- track: ``Tracker.update`` (or ``predict_only`` on a gated frame);
- encode: ``TrackEventPolicy.decide`` + ``EventBuilder.build`` (JPEG crop) + ``encode_event``.
  Publishing itself is measured by the bandwidth benchmark (``run_edge`` against Mosquitto).

Frames per second per core = sampled frames / process CPU seconds (all threads: TFLite's too).
The baseline is the same loop with the gate off (the detector on every sampled frame, full frame).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import BenchResult, Context, cut_clip, median, quantile, still_clip
from benchmarks.table import Row, at_least, at_most
from pipeline.edge_stage.capture import Capture
from pipeline.edge_stage.detectors import Detector, make_detector
from pipeline.edge_stage.events import EventBuilder
from pipeline.edge_stage.motion_gate import MotionGate, detection_roi_with_tracks
from pipeline.edge_stage.tracking_setup import make_tracker, prepare_detections
from pipeline.metrics import Registry
from pipeline.operators.schema import encode_event
from pipeline.operators.track_events import TrackEventPolicy
from pipeline.operators.tracking import Detection, iou
from pipeline.settings import SAMPLE_CLIP, CameraSettings, EdgeSettings

STAGES = ("decode", "motion_gate", "detect", "track", "encode")
DETECT_FPS = 5.0
GROUP = "edge cost"


@dataclass
class Profile:
    clip: str
    gate: bool
    sampled: int = 0
    gated: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    stage_s: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    gated_frame_s: list[float] = field(default_factory=list)  # gate + track + encode of gated frames

    @property
    def fps_per_core(self) -> float | None:
        return self.sampled / self.cpu_s if self.cpu_s > 0 else None

    def stage_ms_mean(self) -> dict[str, float]:
        """Mean cost of each stage per sampled frame (stages a frame skipped count as 0)."""
        n = max(1, self.sampled)
        return {s: 1000.0 * sum(v) / n for s, v in self.stage_s.items()}


def profile_clip(
    clip: Path,
    *,
    gate: bool,
    detector: Detector,
    max_frames: int | None = None,
    detect_fps: float = DETECT_FPS,
) -> Profile:
    camera = CameraSettings(id="bench", source=str(clip), detect_fps=detect_fps, realtime=False)
    stop = threading.Event()
    cap = Capture("bench", str(clip), detect_fps=lambda: detect_fps, realtime=False, stop=stop, metrics=Registry())
    motion_gate = MotionGate(camera.motion_threshold, camera.masks)
    edge = EdgeSettings()
    tracker = make_tracker(edge, camera)
    policy = TrackEventPolicy(keepalive_ms=int(EdgeSettings().keepalive_event_s * 1000))
    builder = EventBuilder("bench", "bench", detector.tag)
    prof = Profile(clip.name, gate)
    st = prof.stage_s
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        while True:
            t0 = time.perf_counter()
            frame = cap.next()
            t1 = time.perf_counter()
            if frame is None:
                break
            st["decode"].append(t1 - t0)
            img, ts = frame.image, frame.ts_ms
            moving, roi = True, None
            if gate:
                motion = motion_gate.check(img)
                moving = motion.motion
                if moving:
                    h, w = img.shape[:2]
                    roi = detection_roi_with_tracks(motion.regions, (w, h), (t.box for t in tracker.tracks))
            t2 = time.perf_counter()
            st["motion_gate"].append(t2 - t1)
            if moving:
                raw = detector.detect(img, roi)
                t3 = time.perf_counter()
                st["detect"].append(t3 - t2)
                # selection + appearance features count as tracking cost (they exist for the tracker)
                update = tracker.update(prepare_detections(img, raw, camera, edge), ts)
            else:
                prof.gated += 1
                t3 = t2
                update = tracker.predict_only(ts)
            t4 = time.perf_counter()
            st["track"].append(t4 - t3)
            for etype, track, with_crop in policy.decide(update, ts):
                encode_event(builder.build(etype, track, ts, with_crop=with_crop, frame_bgr=img,
                                           crop_max_bytes=camera.crop_max_bytes))  # fmt: skip
            t5 = time.perf_counter()
            st["encode"].append(t5 - t4)
            if not moving:
                prof.gated_frame_s.append(t5 - t1)
            prof.sampled += 1
            if max_frames is not None and prof.sampled >= max_frames:
                break
    finally:
        cap.close()
    prof.cpu_s = time.process_time() - cpu0
    prof.wall_s = time.perf_counter() - wall0
    return prof


# --------------------------------------------------------------------------- int8 vs fp32


def matched_pairs(a: list[Detection], b: list[Detection], min_iou: float = 0.5) -> int:
    """Greedy one-to-one matching by IoU (highest first)."""
    pairs = sorted(((iou(x.box, y.box), i, j) for i, x in enumerate(a) for j, y in enumerate(b)), reverse=True)
    used_a: set[int] = set()
    used_b: set[int] = set()
    n = 0
    for v, i, j in pairs:
        if v < min_iou:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        n += 1
    return n


def compare_detectors(clip: Path, frames: int, min_score: float = 0.35) -> tuple[dict[str, list[float]], int, int, int]:
    """ms per frame of each detector (full frame), and persons found by each and matched."""
    import cv2

    dets = {
        "fp32": make_detector(EdgeSettings(detector="centernet", detector_input_size=512)),
        "int8": make_detector(EdgeSettings(detector="centernet-int8")),
    }
    times: dict[str, list[float]] = {k: [] for k in dets}
    n_fp, n_int, n_match = 0, 0, 0
    cap = cv2.VideoCapture(str(clip))
    step = max(1, round((cap.get(cv2.CAP_PROP_FPS) or 10.0) / DETECT_FPS))
    try:
        for d in dets.values():  # warm up (first invoke allocates)
            ok, f = cap.read()
            d.detect(f)
        idx, taken = 0, 0
        while taken < frames:
            ok, frame = cap.read()
            if not ok:
                break
            idx += 1
            if idx % step:
                continue
            taken += 1
            found: dict[str, list[Detection]] = {}
            for k, d in dets.items():
                t0 = time.perf_counter()
                out = d.detect(frame)
                times[k].append(time.perf_counter() - t0)
                found[k] = [x for x in out if x.label == "person" and x.score >= min_score]
            n_fp += len(found["fp32"])
            n_int += len(found["int8"])
            n_match += matched_pairs(found["fp32"], found["int8"])
    finally:
        cap.release()
        for d in dets.values():
            d.close()
    return times, n_fp, n_int, n_match


# --------------------------------------------------------------------------- peak RSS


def _vm_hwm_kib(pid: int) -> int | None:
    """Peak RSS (VmHWM) of a running process from /proc, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def edge_peak_rss_mb(
    ctx: Context, clip: Path, cameras: int = 1, pool: int | None = None, edge: dict[str, object] | None = None
) -> float:
    """Run ``pipeline edge`` on the clip (``cameras`` cameras reading it) as a child process; its
    peak RSS. ``pool``: ``edge.detector_pool`` (None = auto, 0 = one per camera); ``edge``: other
    edge settings (the runtime).

    The peak is VmHWM read from /proc while the child runs (every 50 ms, the last reading before
    it exits), not ``ru_maxrss`` from ``wait4``: Linux carries the forked child's pre-exec peak
    (the benchmark process itself, ~940 MB with TensorFlow loaded) into ``ru_maxrss``, which is
    what the earlier 747 MB figure measured."""
    # paced like live cameras: the shared pool adds interpreters only under the load cameras really
    # make (read as fast as the file allows, every pool would grow to its largest)
    cams = [{"id": f"cam-{i + 1}", "source": str(clip), "realtime": True} for i in range(cameras)]
    settings = ctx.fresh_settings(
        "rss",
        edge={"final_ack_wait_s": 0.0, "ack_timeout_s": 3600.0, "cameras": cams, "detector_pool": pool, **(edge or {})},
    )
    cfg = settings.local.run_dir / "edge.yaml"
    cfg.write_text(settings.to_yaml())
    log = settings.local.run_dir / "edge.log"
    cmd = [sys.executable, "-m", "pipeline.cli", "--config", str(cfg), "edge"]
    peak_kib = 0
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid) or 0)
                time.sleep(0.05)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline edge exited {proc.returncode}; see {log}")
    return peak_kib / 1024.0


# --------------------------------------------------------------------------- benchmark


def _profiles(ctx: Context, clip: Path, gate: bool, max_frames: int | None) -> list[Profile]:
    detector = make_detector(EdgeSettings())
    try:
        profile_clip(clip, gate=gate, detector=detector, max_frames=3)  # warm up
        return [profile_clip(clip, gate=gate, detector=detector, max_frames=max_frames) for _ in range(ctx.repeats)]
    finally:
        detector.close()


def _best(profiles: list[Profile]) -> Profile:
    """The repeat with the median frames per core."""
    ranked = sorted(profiles, key=lambda p: p.fps_per_core or 0.0)
    return ranked[len(ranked) // 2]


# --------------------------------------------------------------------------- speed choices

OPENVINO_BF16: dict[str, object] = {"detector_runtime": "openvino", "detector_precision": "bf16"}
# name -> edge settings; the first is the baseline (the default before issue 18: 512 px, 2 threads)
CHOICES: dict[str, dict[str, object]] = {
    "512 px, 2 threads": {"detector_input_size": 512, "detector_threads": 2},
    "512 px, 1 thread": {"detector_input_size": 512, "detector_threads": 1},
    "384 px, 1 thread": {"detector_input_size": 384, "detector_threads": 1},
    "320 px, 1 thread": {"detector_input_size": 320, "detector_threads": 1},
    # the same float file on OpenVINO in bfloat16 (f32 where the CPU has no bf16)
    "512 px, 1 thread, OpenVINO bf16": {"detector_input_size": 512, "detector_threads": 1, **OPENVINO_BF16},
    "384 px, 1 thread, OpenVINO bf16": {"detector_input_size": 384, "detector_threads": 1, **OPENVINO_BF16},
}


def choice_rows(ctx: Context, max_frames: int | None) -> tuple[list[Row], dict[str, object]]:
    """Per detector choice, on the sample clip with the gate on: ms/frame by stage, cameras/core.

    Recall and IDF1 of each choice come from the accuracy benchmark (variants fp32, fp32-384,
    fp32-320 at 5 fps), reported beside these rows in benchmarks/RESULTS.md.
    """
    profiles: dict[str, Profile] = {}
    for name, update in CHOICES.items():
        ctx.log(f"edge cost: detector choice {name}, {ctx.repeats} run(s)")
        detector = make_detector(EdgeSettings().model_copy(update=update))
        try:
            profile_clip(SAMPLE_CLIP, gate=True, detector=detector, max_frames=3)  # warm up
            runs = [profile_clip(SAMPLE_CLIP, gate=True, detector=detector, max_frames=max_frames)
                    for _ in range(ctx.repeats)]  # fmt: skip
        finally:
            detector.close()
        profiles[name] = _best(runs)
        p = profiles[name]
        ctx.log(f"   {name}: {p.fps_per_core or 0:.1f} frames/s/core, detect {p.stage_ms_mean()['detect']:.1f} ms")
    base_name = next(iter(CHOICES))
    base = profiles[base_name]
    rows: list[Row] = []
    for name, p in profiles.items():
        cams = None if p.fps_per_core is None else p.fps_per_core / DETECT_FPS
        base_cams = None if base.fps_per_core is None else base.fps_per_core / DETECT_FPS
        stages = p.stage_ms_mean()
        rows.append(
            Row.make(
                f"cameras per core at 5 fps, {name}",
                cams,
                "cams",
                baseline=base_cams if name != base_name else None,
                baseline_label=base_name if name != base_name else "",
                target=at_least(4),
                group=GROUP,
                note="ms/frame: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()),
            )
        )
    series: dict[str, object] = {
        name: {"stage_ms": p.stage_ms_mean(), "fps_per_core": p.fps_per_core} for name, p in profiles.items()
    }
    return rows, series


def run(ctx: Context) -> BenchResult:
    still_s = 10.0 if ctx.quick else 20.0
    still = still_clip(ctx.work_dir / f"still_{still_s:.0f}s.mp4", still_s)
    runs: dict[str, Profile] = {}
    max_frames = 50 if ctx.quick else None  # quick: the first 10 s of each clip at 5 fps
    for label, clip in (("clip", SAMPLE_CLIP), ("still", still)):
        for gate in (True, False):
            ctx.log(f"edge cost: {clip.name}, motion gate {'on' if gate else 'off'}, {ctx.repeats} run(s)")
            runs[f"{label}_{'on' if gate else 'off'}"] = _best(_profiles(ctx, clip, gate, max_frames))
    for k, p in runs.items():
        ctx.log(
            f"   {k}: {p.sampled} frames, {p.gated} gated, {p.fps_per_core or 0:.1f} frames/s/core,"
            f" {p.wall_s:.1f} s wall"
        )

    choices, choice_series = choice_rows(ctx, max_frames)
    ctx.log("edge cost: int8 vs fp32 detector")
    frames = 15 if ctx.quick else 100
    times, n_fp, n_int, n_match = compare_detectors(SAMPLE_CLIP, frames)
    ctx.log("edge cost: peak RSS of `pipeline edge` on the clip (child process)")
    rss_clip = cut_clip(ctx.work_dir / "clip_10s.mp4", 10.0) if ctx.quick else SAMPLE_CLIP
    rss = median(edge_peak_rss_mb(ctx, rss_clip) for _ in range(1 if ctx.quick else 2))
    ctx.log("edge cost: peak RSS with 4 cameras, shared interpreter pool vs one interpreter per camera")
    rss4 = {pool: median(edge_peak_rss_mb(ctx, rss_clip, cameras=4, pool=pool) for _ in range(1 if ctx.quick else 2))
            for pool in (None, 0)}  # fmt: skip
    rss4_384 = median(
        edge_peak_rss_mb(ctx, rss_clip, cameras=4, edge={"detector_input_size": 384})
        for _ in range(1 if ctx.quick else 2)
    )
    ctx.log("edge cost: peak RSS with 4 cameras on OpenVINO bf16 (shared pool of infer requests)")
    rss4_ov = median(
        edge_peak_rss_mb(ctx, rss_clip, cameras=4, edge=OPENVINO_BF16) for _ in range(1 if ctx.quick else 2)
    )

    rows: list[Row] = []
    for label, what in (("clip", "sample clip"), ("still", "still scene")):
        on, off = runs[f"{label}_on"], runs[f"{label}_off"]
        rows.append(
            Row.make(
                f"frames/s per core, {what}, gate on",
                on.fps_per_core,
                "fps",
                baseline=off.fps_per_core,
                baseline_label="gate off",
                group=GROUP,
                note=f"{on.gated}/{on.sampled} sampled frames gated off",
            )
        )
    clip_on = runs["clip_on"]
    cams = None if clip_on.fps_per_core is None else clip_on.fps_per_core / DETECT_FPS
    rows.append(
        Row.make(
            "cameras per core at 5 fps (sample clip, gate on)",
            cams,
            "cams",
            target=at_least(4),
            group=GROUP,
            note="frames/s per core / 5; measured live in the scale benchmark",
        )
    )
    gated_ms = [1000 * s for s in runs["still_on"].gated_frame_s]
    rows.append(
        Row.make(
            "gated-off frame cost p50 (still scene)",
            quantile(gated_ms, 0.5),
            "ms",
            target=at_most(2.0),
            group=GROUP,
            note=f"gate + tracker predict + events, decode excluded; p95 {quantile(gated_ms, 0.95) or 0:.2f}"
            f" ms over {len(gated_ms)} frames",
        )
    )
    for stage, v in clip_on.stage_ms_mean().items():
        # gate off has no gate stage: no baseline to compare with
        off_v = None if stage == "motion_gate" else runs["clip_off"].stage_ms_mean()[stage]
        rows.append(
            Row.make(
                f"stage {stage}, ms/frame (sample clip, gate on)",
                v,
                "ms",
                baseline=off_v,
                baseline_label="gate off" if off_v is not None else "",
                group=GROUP,
            )
        )
    rows.append(Row.make("edge peak RSS (`pipeline edge`, 1 camera)", rss, "MB", group=GROUP))
    rows.append(
        Row.make(
            "edge peak RSS, 4 cameras (shared interpreter pool)",
            rss4[None],
            "MB",
            baseline=rss4[0],
            baseline_label="1 interpreter per camera",
            target=at_most(250),
            group=GROUP,
            note=f"pool of 1 to {min(4, os.cpu_count() or 1)} single-threaded interpreters, grown while busy >= 75%"
            " (edge.detector_pool auto); cameras paced at the clip's rate",
        )
    )
    for label, value, versus, note in (
        ("edge peak RSS, 4 cameras, 384 px (shared pool)", rss4_384, "512 px", ""),
        ("edge peak RSS, 4 cameras, OpenVINO bf16 (shared pool)", rss4_ov, "LiteRT shared pool",
         "one compiled model, one infer request per core; the OpenVINO runtime's own libraries cost most"),
    ):  # fmt: skip
        rows.append(Row.make(label, value, "MB", baseline=rss4[None], baseline_label=versus, target=at_most(250),
                             group=GROUP, note=note))  # fmt: skip
    rows += choices
    fp_ms, int_ms = quantile([1000 * t for t in times["fp32"]], 0.5), quantile([1000 * t for t in times["int8"]], 0.5)
    rows.append(
        Row.make(
            "int8 detector ms/frame p50 (full frame)", int_ms, "ms", baseline=fp_ms, baseline_label="fp32", group=GROUP
        )
    )
    agreement = 2 * n_match / (n_fp + n_int) if n_fp + n_int else None
    rows.append(
        Row.make(
            "int8 vs fp32 person agreement (F1, IoU>=0.5)",
            agreement,
            "",
            group=GROUP,
            note=f"{n_match} matched of {n_fp} fp32 / {n_int} int8 persons on {len(times['fp32'])} frames",
        )
    )
    series = {
        "stage_ms": {k: p.stage_ms_mean() for k, p in runs.items()},
        "fps_per_core": {k: p.fps_per_core for k, p in runs.items()},
        "gated_frame_ms": gated_ms,
        "detector_ms": {k: [1000 * t for t in v] for k, v in times.items()},
        "choices": choice_series,
        "rss_4_cameras_mb": {"pool": rss4[None], "per_camera": rss4[0], "openvino_bf16_pool": rss4_ov},
    }
    return BenchResult(rows, series)
