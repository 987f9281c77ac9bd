"""Per-frame tracking scores with py-motmetrics (CLEAR MOT, IDF1), and who-was-who per frame.

Glue only: boxes in, ``motmetrics`` does the matching (IoU >= 0.5, MOTChallenge's criterion) and
the metrics. HOTA comes from ``trackers.eval`` in the reference environment
(:mod:`benchmarks.accuracy.reference_runner`); both are maintained ports of the MOTChallenge
tools. ``tests/benchmarks/test_accuracy_scoring.py`` pins the glue on synthetic tracks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import motmetrics as mm
import numpy as np
import numpy.typing as npt

from benchmarks.accuracy.data import PxBox

Tracks = Mapping[int, Sequence[tuple[int, PxBox]]]  # frame -> [(track id, box)]
METRICS = (
    "mota",
    "idf1",
    "idp",
    "idr",
    "num_switches",
    "num_fragmentations",
    "mostly_tracked",
    "partially_tracked",
    "mostly_lost",
    "precision",
    "recall",
    "num_false_positives",
    "num_misses",
    "num_unique_objects",
)


@dataclass(frozen=True, slots=True)
class TrackingScore:
    frames: int
    mota: float
    idf1: float
    idp: float
    idr: float
    id_switches: int
    fragmentations: int
    mostly_tracked: int
    partially_tracked: int
    mostly_lost: int
    precision: float
    recall: float
    false_positives: int
    misses: int
    gt_ids: int
    track_ids: int  # distinct tracker ids output on the scored frames
    # gt id -> [(frame, matched track id or -1)], for the identity timeline plot
    timeline: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "timeline"}


def _xywh(boxes: Iterable[PxBox]) -> npt.NDArray[np.float64]:
    arr = np.array([[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in boxes], dtype=np.float64)
    return arr.reshape(-1, 4)


def score_tracks(tracks: Tracks, ground_truth: Tracks, frames: Sequence[int]) -> TrackingScore:
    """Score ``tracks`` against ``ground_truth`` on ``frames`` (missing frames: nothing output)."""
    acc = mm.MOTAccumulator(auto_id=False)
    track_ids: set[int] = set()
    for f in frames:
        gt = list(ground_truth.get(f, ()))
        hyp = list(tracks.get(f, ()))
        track_ids.update(tid for tid, _ in hyp)
        dist = mm.distances.iou_matrix(_xywh(b for _, b in gt), _xywh(b for _, b in hyp), max_iou=0.5)
        acc.update([g for g, _ in gt], [t for t, _ in hyp], dist, frameid=f)
    mh = mm.metrics.create()
    s = mh.compute(acc, metrics=list(METRICS), name="t").iloc[0]
    timeline: dict[int, list[tuple[int, int]]] = {}
    ev = acc.mot_events.reset_index()
    for row in ev.itertuples(index=False):
        if row.Type in ("MATCH", "SWITCH", "MISS", "TRANSFER", "ASCEND", "MIGRATE") and not np.isnan(row.OId):
            hid = -1 if row.Type == "MISS" or np.isnan(row.HId) else int(row.HId)
            timeline.setdefault(int(row.OId), []).append((int(row.FrameId), hid))
    # motmetrics logs a SWITCH next to its MATCH-like twin; keep one entry per (gt, frame)
    timeline = {g: sorted(dict(v).items()) for g, v in timeline.items()}

    def num(key: str) -> float:
        v = float(s[key])
        return 0.0 if np.isnan(v) else v

    return TrackingScore(
        frames=len(frames),
        mota=num("mota"),
        idf1=num("idf1"),
        idp=num("idp"),
        idr=num("idr"),
        id_switches=int(num("num_switches")),
        fragmentations=int(num("num_fragmentations")),
        mostly_tracked=int(num("mostly_tracked")),
        partially_tracked=int(num("partially_tracked")),
        mostly_lost=int(num("mostly_lost")),
        precision=num("precision"),
        recall=num("recall"),
        false_positives=int(num("num_false_positives")),
        misses=int(num("num_misses")),
        gt_ids=int(num("num_unique_objects")),
        track_ids=len(track_ids),
        timeline=timeline,
    )
