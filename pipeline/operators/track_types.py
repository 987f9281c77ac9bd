"""The tracker's values: what goes in (:class:`Detection`), what comes out (:class:`Track`,
:class:`TrackUpdate`) and the box arithmetic both sides use (:func:`iou`, :func:`clip_box`).

Apart from :mod:`pipeline.operators.tracking` because most of the code base handles these values
(detectors make detections, the event policy and the benchmarks read tracks) without needing the
tracker's association logic; :mod:`pipeline.operators.tracking` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.operators.appearance import Feature
from pipeline.operators.schema import Box


@dataclass(frozen=True, slots=True)
class Detection:
    box: Box  # x1, y1, x2, y2, normalised
    score: float
    label: str
    feature: Feature | None = None  # appearance histogram (pipeline.operators.appearance)


@dataclass(frozen=True, slots=True)
class Track:
    """Snapshot of a track at one step (immutable: holding it never sees later changes)."""

    id: int
    label: str
    score: float  # exponentially smoothed score of its high-score detections
    box: Box  # current estimate, clipped to the frame; for ended tracks the last matched one
    first_ms: int  # time of the first detection
    last_ms: int  # time of the last matched detection
    hits: int  # matched detections in total
    missed: int  # consecutive detection steps without a match
    velocity: tuple[float, float] = (0.0, 0.0)  # centre velocity, normalised units per second
    feature: Feature | None = None  # smoothed appearance, when detections carried one
    link: int | None = None  # a lost or ended track this one probably continues (see Tracker)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    """What one step did. A track appears in at most one list per step."""

    started: list[Track] = field(default_factory=list)  # confirmed this step
    updated: list[Track] = field(default_factory=list)  # confirmed before, matched this step
    ended: list[Track] = field(default_factory=list)  # lost for lost_ms; removed
    held: list[Track] = field(default_factory=list)  # predict_only: alive, not re-detected


def clip_box(box: Box) -> Box:
    x1, y1, x2, y2 = (min(max(c, 0.0), 1.0) for c in box)
    return (x1, y1, max(x1, x2), max(y1, y2))


def iou(a: Box, b: Box) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0.0 or iy <= 0.0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0.0 else 0.0
