"""Person detection quality against the ground truth: precision, recall and AP at IoU 0.5.

PASCAL-VOC style: detections of all frames are ranked by score; each is a true positive when it
overlaps a not-yet-claimed GT box of its frame with IoU >= 0.5 (the best-overlapping one), else a
false positive. AP is the area under the precision envelope (all-point interpolation, VOC 2010+).
Precision/recall at the configured ``min_score`` are the same counts cut at that score.

Hand-written because no maintained package on this numpy (1.26) scores plain box lists without a
COCO file round trip; ``tests/benchmarks/test_accuracy_scoring.py`` checks it on cases whose answer
is known (perfect detector AP = 1, one FP ranked first, duplicates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from benchmarks.accuracy.data import PxBox
from pipeline.operators.tracking import iou


@dataclass(frozen=True, slots=True)
class DetectionScore:
    ap50: float
    precision: float  # at min_score
    recall: float  # at min_score
    tp: int
    fp: int
    gt: int
    min_score: float
    curve: tuple[tuple[float, float, float], ...]  # (score, recall, precision), ranked


def score_detections(
    detections: Mapping[int, Sequence[tuple[PxBox, float]]],
    ground_truth: Mapping[int, Sequence[PxBox]],
    *,
    min_score: float,
    iou_threshold: float = 0.5,
) -> DetectionScore:
    """``detections[frame] = [(box, score)]`` vs ``ground_truth[frame] = [box]`` on the GT's frames."""
    ranked: list[tuple[float, int, PxBox]] = [
        (score, frame, box) for frame, dets in detections.items() if frame in ground_truth for box, score, *_ in dets
    ]
    ranked.sort(key=lambda r: -r[0])
    n_gt = sum(len(v) for v in ground_truth.values())
    claimed: dict[int, set[int]] = {f: set() for f in ground_truth}
    hits = np.zeros(len(ranked), dtype=bool)
    for k, (_, frame, box) in enumerate(ranked):
        best, best_j = iou_threshold, -1
        for j, g in enumerate(ground_truth[frame]):
            if j in claimed[frame]:
                continue
            o = iou(box, g)
            if o >= best:
                best, best_j = o, j
        if best_j >= 0:
            claimed[frame].add(best_j)
            hits[k] = True
    tp_cum = np.cumsum(hits)
    fp_cum = np.cumsum(~hits)
    recall = tp_cum / n_gt if n_gt else np.zeros(len(ranked))
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
    ap = _average_precision(recall, precision)
    cut = sum(1 for s, _, _ in ranked if s >= min_score)
    tp = int(tp_cum[cut - 1]) if cut else 0
    fp = cut - tp
    step = max(1, len(ranked) // 200)  # a plot needs ~200 points, not every detection
    curve = tuple((float(ranked[i][0]), float(recall[i]), float(precision[i])) for i in range(0, len(ranked), step))
    return DetectionScore(
        ap50=ap,
        precision=tp / cut if cut else 0.0,
        recall=tp / n_gt if n_gt else 0.0,
        tp=tp,
        fp=fp,
        gt=n_gt,
        min_score=min_score,
        curve=curve,
    )


def _average_precision(recall: npt.NDArray[np.float64], precision: npt.NDArray[np.float64]) -> float:
    if not len(recall):
        return 0.0
    r = np.concatenate([[0.0], recall, [recall[-1]]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope: best precision at recall >= r
    idx = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[idx + 1] - r[idx]) * p[idx + 1]))
