"""Norfair configured the way Frigate configures it (``frigate/track/norfair_tracker.py``).

Frigate tracks the box's two corners with Norfair and its own distance: the offset of the
bottom-centre point relative to the estimate's width and height, plus how much width and height
changed (ratio - 1), as one Euclidean norm; ``distance_threshold=2.5``, ``initialization_delay=0``
and ``hit_counter_max = max_disappeared``, which Frigate defaults to 5 s of detection frames.
Re-implemented here from that description (Frigate is not a dependency).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from norfair.tracker import Detection as NfDetection
from norfair.tracker import TrackedObject
from norfair.tracker import Tracker as NfTracker

from benchmarks.accuracy.replay import Scored, TrackRows


def frigate_distance(detection: NfDetection, tracked: TrackedObject) -> float:
    est = tracked.estimate
    # Norfair annotates ``points`` as ``np.array`` (a function, not a type); it is the validated
    # [2, 2] point array ``validate_points`` returns.
    det: npt.NDArray[np.float64] = detection.points
    est_w, est_h = max(est[1, 0] - est[0, 0], 1e-6), max(est[1, 1] - est[0, 1], 1e-6)
    det_w, det_h = max(det[1, 0] - det[0, 0], 1e-6), max(det[1, 1] - det[0, 1], 1e-6)
    dx = ((det[0, 0] + det[1, 0]) - (est[0, 0] + est[1, 0])) / 2.0 / est_w  # bottom-centre x offset / w
    dy = (max(det[:, 1]) - max(est[:, 1])) / est_h  # bottom edge offset / h
    w_ratio = max(est_w, det_w) / min(est_w, det_w) - 1.0
    h_ratio = max(est_h, det_h) / min(est_h, det_h) - 1.0
    return float(np.linalg.norm([dx, dy, w_ratio, h_ratio]))


def run_norfair(
    detections: dict[int, list[Scored]], frames: Sequence[int], detect_fps: float, min_score: float
) -> TrackRows:
    tracker = NfTracker(
        distance_function=frigate_distance,
        distance_threshold=2.5,
        initialization_delay=0,
        hit_counter_max=max(1, round(5 * detect_fps)),  # Frigate: max_disappeared = 5 s of frames
    )
    out: TrackRows = {}
    for i in frames:
        nf = [
            NfDetection(points=np.array([[b[0], b[1]], [b[2], b[3]]]), scores=np.array([s, s]), data=(i, b))
            for b, s, _ in detections.get(i, [])
            if s >= min_score
        ]
        objs = tracker.update(detections=nf)
        out[i] = [
            (int(o.id), o.last_detection.data[1])
            for o in objs
            if o.id is not None and o.last_detection is not None and o.last_detection.data[0] == i
        ]
    return out
