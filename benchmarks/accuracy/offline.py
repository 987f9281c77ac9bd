"""Parts 1, 2 and 5 of the accuracy benchmark: detection, tracking side by side, speed vs accuracy.

Everything here is computed from two detector passes per variant (every GT frame, full frame; and
the deployed replay with the motion gate), so the five trackers really see the same detections:

* ours as deployed (5 fps on the file's clock, predicted boxes between) and scored two ways: on
  the sampled frames (where every tracker has an answer) and on every GT frame;
* ByteTrack, SORT, OC-SORT (Roboflow ``trackers``, in ``.venv-ref``) and Norfair configured as
  Frigate does, on the detections our tracker was fed;
* the same at every frame (detect_fps = the file's rate).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.accuracy.data import GroundTruth
from benchmarks.accuracy.detection_metrics import DetectionScore, score_detections
from benchmarks.accuracy.mot_scoring import TrackingScore, score_tracks
from benchmarks.accuracy.norfair_frigate import run_norfair
from benchmarks.accuracy.replay import Deployed, EveryFrame, Scored, TrackRows, replay_tracker
from pipeline.operators.tracking import Detection, Tracker
from pipeline.settings import REPO_ROOT, CameraSettings

REF_PYTHON = REPO_ROOT / ".venv-ref" / "bin" / "python"
REF_RUNNER = Path(__file__).with_name("reference_runner.py")
REFERENCES = ("bytetrack", "sort", "ocsort", "norfair")

Select = Callable[[list[Detection], CameraSettings], list[Detection]]


@dataclass
class ModeResult:
    """One tracking mode (e.g. deployed at 5 fps): every tracker's scores on the same frames."""

    name: str
    frames: list[int]
    detect_fps: float
    scores: dict[str, TrackingScore] = field(default_factory=dict)
    hota: dict[str, dict[str, float]] = field(default_factory=dict)
    tracks: dict[str, TrackRows] = field(default_factory=dict)

    def best_reference(self, key: str = "idf1") -> tuple[str, float]:
        refs = [(n, getattr(s, key)) for n, s in self.scores.items() if n in REFERENCES]
        return max(refs, key=lambda r: r[1]) if refs else ("none", 0.0)


def detection_scores(every: dict[str, EveryFrame], gt: GroundTruth, min_score: float) -> dict[str, DetectionScore]:
    truth = {i: [b for _, b in gt.at(i)] for i in range(gt.first, gt.last + 1)}
    return {
        name: score_detections({f: [(b, s) for b, s, _ in d] for f, d in ev.detections.items()}, truth,
                               min_score=min_score)
        for name, ev in every.items()
    }  # fmt: skip


def _rows(tracks: TrackRows) -> dict[str, list[list[float]]]:
    return {str(i): [[t, *b] for t, b in r] for i, r in tracks.items()}


def run_references(
    modes: list[tuple[str, list[int], float, dict[int, list[Scored]]]],
    ours: dict[str, tuple[list[int], TrackRows]],
    gt: GroundTruth,
    min_score: float,
    work: Path,
) -> tuple[dict[str, TrackRows], dict[str, dict[str, float]]]:
    """ByteTrack/SORT/OC-SORT outputs and HOTA of every output, from ``.venv-ref``."""
    if not REF_PYTHON.is_file():
        raise FileNotFoundError(f"{REF_PYTHON} missing: run ./dev setup (it builds the reference environment)")
    job: dict[str, Any] = {
        "runs": {
            name: {
                "frames": frames,
                "fps": fps,
                "min_score": min_score,
                "detections": {str(i): [[*b, s] for b, s, _ in d] for i, d in dets.items()},
            }
            for name, frames, fps, dets in modes
        },
        "score": {name: {"frames": frames, "tracks": _rows(t)} for name, (frames, t) in ours.items()},
        "gt": _rows({i: gt.at(i) for i in range(gt.first, gt.last + 1)}),
    }
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(job))
        proc = subprocess.run(
            [str(REF_PYTHON), str(REF_RUNNER), str(src), str(dst)], capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            raise RuntimeError(f"reference trackers failed: {proc.stderr.strip()[-800:]}")
        out = json.loads(dst.read_text())
    tracks = {
        k: {int(f): [(int(r[0]), (r[1], r[2], r[3], r[4])) for r in rows] for f, rows in v.items()}
        for k, v in out["tracks"].items()
    }
    return tracks, out["hota"]


def tracking_modes(
    deployed: Deployed,
    every: EveryFrame,
    gt: GroundTruth,
    camera: CameraSettings,
    make_tracker: Callable[[], Tracker],
    select: Select,
    work: Path,
    log: Callable[[str], object] = print,
) -> list[ModeResult]:
    """Deployed (sampled frames), deployed (every frame, ours only) and every-frame detection."""
    truth = {i: gt.at(i) for i in range(gt.first, gt.last + 1)}
    all_frames = list(range(gt.first, gt.last + 1))
    fps = deployed.fps
    dep = ModeResult(f"as deployed, {deployed.detect_fps:g} fps", deployed.sampled, deployed.detect_fps)
    dep_every = ModeResult(
        f"as deployed, {deployed.detect_fps:g} fps, scored at every frame", all_frames, deployed.detect_fps
    )
    full = ModeResult(f"detector on every frame ({fps:g} fps)", all_frames, fps)
    dep.tracks["ours"] = deployed.live
    dep_every.tracks["ours"] = deployed.every
    full.tracks["ours"] = replay_tracker(every.detections, all_frames, fps, make_tracker, select, camera)
    dep.tracks["norfair"] = run_norfair(deployed.fed, deployed.sampled, deployed.detect_fps, camera.min_score)
    full.tracks["norfair"] = run_norfair(every.detections, all_frames, fps, camera.min_score)
    try:
        ref_tracks, hota = _references(deployed, every, dep, full, dep_every, gt, camera, work)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        log(f"   reference trackers and HOTA skipped: {exc}")
        ref_tracks, hota = {}, {}
    for key, rows in ref_tracks.items():
        mode, name = key.split("/")
        (dep if mode == "deployed" else full).tracks[name] = rows
    for result, prefix in ((dep, "deployed"), (dep_every, "deployed-all"), (full, "every")):
        for name, rows in result.tracks.items():
            result.scores[name] = score_tracks(rows, truth, result.frames)
            if f"{prefix}/{name}" in hota:
                result.hota[name] = hota[f"{prefix}/{name}"]
    return [dep, dep_every, full]


def _references(
    deployed: Deployed,
    every: EveryFrame,
    dep: ModeResult,
    full: ModeResult,
    dep_every: ModeResult,
    gt: GroundTruth,
    camera: CameraSettings,
    work: Path,
) -> tuple[dict[str, TrackRows], dict[str, dict[str, float]]]:
    """ByteTrack/SORT/OC-SORT on both modes' detections, and HOTA of every output (``.venv-ref``)."""
    ours = {
        "deployed/ours": (dep.frames, dep.tracks["ours"]),
        "deployed/norfair": (dep.frames, dep.tracks["norfair"]),
        "every/ours": (full.frames, full.tracks["ours"]),
        "every/norfair": (full.frames, full.tracks["norfair"]),
        "deployed-all/ours": (dep_every.frames, dep_every.tracks["ours"]),
    }
    modes = [
        ("deployed", deployed.sampled, deployed.detect_fps, deployed.fed),
        ("every", full.frames, deployed.fps, every.detections),
    ]
    return run_references(modes, ours, gt, camera.min_score, work)


@dataclass(frozen=True, slots=True)
class SpeedPoint:
    variant: str
    detect_fps: float
    ms_per_frame: float  # detector p50 on full frames
    idf1: float
    mota: float
    recall: float  # tracking recall (boxes of confirmed tracks)
    id_switches: int


def speed_table(
    every: dict[str, EveryFrame],
    gt: GroundTruth,
    fps: float,
    rates: tuple[float, ...],
    camera: CameraSettings,
    make_tracker: Callable[[], Tracker],
    select: Select,
) -> list[SpeedPoint]:
    """Variant x detect_fps -> detector ms/frame and our tracker's IDF1/recall (full-frame detections)."""
    truth = {i: gt.at(i) for i in range(gt.first, gt.last + 1)}
    out: list[SpeedPoint] = []
    for name, ev in every.items():
        ms = sorted(ev.ms_per_frame)
        p50 = ms[len(ms) // 2] if ms else float("nan")
        for rate in rates:
            step = max(1, round(fps / rate))
            frames = list(range(gt.first, gt.last + 1, step))
            rows = replay_tracker(ev.detections, frames, fps, make_tracker, select, camera)
            s = score_tracks(rows, truth, frames)
            out.append(SpeedPoint(name, fps / step, p50, s.idf1, s.mota, s.recall, s.id_switches))
    return out
