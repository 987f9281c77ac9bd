"""Colour histograms of detection boxes: the appearance cue the tracker's re-identification uses.

Hue x saturation histograms (8 x 4 bins) of the upper and lower half of each box (shirt and
trousers are the most telling colours of a pedestrian), concatenated and L1-normalised: a
64-number feature. Pixels that are nearly grey (low saturation) or dark carry no reliable hue, so
the saturation bins keep them apart from coloured ones instead of guessing a hue. The box is
shrunk by 15 % on each side first, to keep background out. Cost: ~0.1 ms a box at 768x576.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pipeline.edge_stage.capture import Image
from pipeline.operators.appearance import Feature
from pipeline.operators.tracking import Detection

HUE_BINS, SAT_BINS = 8, 4
_SHRINK = 0.15


def box_feature(frame_bgr: Image, box: Sequence[float]) -> Feature | None:
    """The feature of one normalised box, or None when it is too small to say anything."""
    h, w = frame_bgr.shape[:2]
    x1, y1, x2, y2 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    dx, dy = (x2 - x1) * _SHRINK, (y2 - y1) * _SHRINK
    xa, xb = int(max(0, x1 + dx)), int(min(w, x2 - dx))
    ya, yb = int(max(0, y1 + dy)), int(min(h, y2 - dy))
    if xb - xa < 4 or yb - ya < 8:
        return None
    hsv = cv2.cvtColor(frame_bgr[ya:yb, xa:xb], cv2.COLOR_BGR2HSV)
    mid = (yb - ya) // 2
    parts = []
    for half in (hsv[:mid], hsv[mid:]):
        hist = cv2.calcHist([half], [0, 1], None, [HUE_BINS, SAT_BINS], [0, 180, 0, 256])
        parts.append(hist.ravel())
    vec = np.concatenate(parts).astype(np.float64)
    total = float(vec.sum())
    if total <= 0:
        return None
    return tuple(float(v) for v in vec / total)


def with_features(frame_bgr: Image, detections: list[Detection], labels: frozenset[str] = frozenset({"person"})
                  ) -> list[Detection]:  # fmt: skip
    """``detections`` with an appearance feature on those of ``labels`` (others unchanged)."""
    return [
        Detection(d.box, d.score, d.label, box_feature(frame_bgr, d.box)) if d.label in labels else d
        for d in detections
    ]
