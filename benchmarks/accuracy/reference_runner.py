"""Reference trackers and HOTA, run in the reference environment (``.venv-ref``).

Why a second environment: Roboflow's ``trackers`` (ByteTrack, SORT, OC-SORT, and ``trackers.eval``,
a port of TrackEval's HOTA/CLEAR/Identity) requires numpy >= 2, and the product's environment is
held at numpy 1.26 by mediapipe 0.10.21 (the last release with bundled models). ``./dev setup``
builds ``.venv-ref`` from ``benchmarks/requirements-reference.txt``; this script imports nothing
from ``pipeline`` and talks JSON over files:

    .venv-ref/bin/python benchmarks/accuracy/reference_runner.py IN.json OUT.json

IN: ``{"runs": {name: {"frames": [i...], "fps": f, "min_score": s, "detections": {i: [[x1,y1,x2,y2,score]]}}},
"score": {name: {"frames": [...], "tracks": {i: [[id,x1,y1,x2,y2]]}}}, "gt": {i: [[id,x1,y1,x2,y2]]}}``.
OUT: ``{"tracks": {run/tracker: {i: [[id,...]]}}, "hota": {name: {HOTA, DetA, AssA, ...}}}``; every
reference output is also scored (HOTA) under its own name.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker, OCSORTTracker, SORTTracker
from trackers.eval import box_iou, compute_hota_metrics


def make_trackers(fps: float, min_score: float) -> dict[str, Any]:
    """The package's defaults, with the stream's real rate and the edge's score threshold.

    ``frame_rate`` is the rate detections arrive at (5 fps as deployed), so each tracker's
    lost-track buffer (30 frames at 30 fps = 1 s by default) keeps its meaning in seconds.
    ByteTrack's high/activation thresholds are the edge's ``min_score``: CenterNet's person scores
    on this scene are 0.35-0.65, so the package's 0.6/0.7 would leave ByteTrack starting no track.
    """
    return {
        "bytetrack": ByteTrackTracker(
            frame_rate=fps, track_activation_threshold=min_score, high_conf_det_threshold=min_score
        ),
        "sort": SORTTracker(frame_rate=fps, track_activation_threshold=min_score),
        "ocsort": OCSORTTracker(frame_rate=fps, high_conf_det_threshold=min_score),
    }


def run_tracker(
    tracker: Any, frames: list[int], dets: dict[str, list[list[float]]], min_score: float, low_scores: bool
) -> dict[int, list[list[float]]]:
    out: dict[int, list[list[float]]] = {}
    for f in frames:
        rows = [r for r in dets.get(str(f), []) if low_scores or r[4] >= min_score]
        arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
        d = sv.Detections(xyxy=arr[:, :4], confidence=arr[:, 4], class_id=np.zeros(len(arr), dtype=int))
        res = tracker.update(d)
        ids = res.tracker_id if res.tracker_id is not None else np.array([], dtype=int)
        out[f] = [[int(t), *map(float, b)] for t, b in zip(ids, res.xyxy, strict=True) if int(t) >= 0]
    return out


def hota(gt: dict[str, list[list[float]]], tracks: dict[int, list[list[float]]], frames: list[int]) -> dict[str, float]:
    gt_ids, tr_ids, sims = [], [], []
    for f in frames:
        g = np.array(gt.get(str(f), []), dtype=np.float64).reshape(-1, 5)
        t = np.array(tracks.get(f, []), dtype=np.float64).reshape(-1, 5)
        gt_ids.append(g[:, 0].astype(int))
        tr_ids.append(t[:, 0].astype(int))
        sims.append(box_iou(g[:, 1:], t[:, 1:]) if len(g) and len(t) else np.zeros((len(g), len(t))))
    m = compute_hota_metrics(gt_ids, tr_ids, sims)
    return {k: float(m[k]) for k in ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "LocA")}


def main(argv: list[str]) -> int:
    src, dst = argv[1], argv[2]
    with open(src) as fh:
        job = json.load(fh)
    out_tracks: dict[str, dict[int, list[list[float]]]] = {}
    out_hota: dict[str, dict[str, float]] = {}
    for run_name, run in job["runs"].items():
        frames = [int(f) for f in run["frames"]]
        for name, tracker in make_trackers(float(run["fps"]), float(run["min_score"])).items():
            # ByteTrack and OC-SORT are built to take low-score detections too; SORT is not.
            low = name in ("bytetrack", "ocsort")
            key = f"{run_name}/{name}"
            out_tracks[key] = run_tracker(tracker, frames, run["detections"], float(run["min_score"]), low)
            out_hota[key] = hota(job["gt"], out_tracks[key], frames)
    for name, sc in job.get("score", {}).items():
        tracks = {int(f): v for f, v in sc["tracks"].items()}
        out_hota[name] = hota(job["gt"], tracks, [int(f) for f in sc["frames"]])
    with open(dst, "w") as fh:
        json.dump({"tracks": out_tracks, "hota": out_hota}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
