"""SORT-style multi-object tracker: a constant-velocity Kalman filter per track, optimal IoU
matching (Hungarian, :mod:`pipeline.operators.assignment`) within each label.

Pure: the caller passes the frame time in (``t_ms``, epoch or monotonic milliseconds, never
decreasing; a step back is treated as zero elapsed time). Boxes are normalised x1, y1, x2, y2.

Lifecycle of a track:

* An unmatched detection opens a *tentative* track. It is confirmed after ``min_hits``
  matches on consecutive detection steps (reported once in ``started``); a tentative track
  that misses one step is dropped silently, which filters one-frame false positives.
* A confirmed track that is matched is reported in ``updated``; one that misses more than
  ``max_missed`` consecutive detection steps is reported in ``ended`` and removed.
* :meth:`Tracker.predict_only` is for frames the motion gate skipped: see its docstring.

Track ids come from a counter (``first_id`` upwards) that never goes back, so ids are never
reused within a tracker; tentative tracks that die also consume ids, so there can be gaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from pipeline.operators.assignment import linear_assignment
from pipeline.operators.schema import Box

Array = npt.NDArray[np.float64]

_MIN_SIZE: Final = 1e-4
# Noise model, in normalised units and seconds. Measurement noise is detector jitter; process
# noise is how fast velocity may change (white-noise acceleration). Pedestrians and cars cross
# a frame in seconds, so accelerations of ~0.5 frame/s^2 are plausible for the centre.
_MEAS_STD: Final = np.array([0.01, 0.01, 0.02, 0.02])
_ACCEL_STD: Final = np.array([0.5, 0.5, 0.2, 0.2])
_INIT_VEL_STD: Final = 0.5
_H: Final = np.hstack([np.eye(4), np.zeros((4, 4))])


@dataclass(frozen=True, slots=True)
class Detection:
    box: Box  # x1, y1, x2, y2, normalised
    score: float
    label: str


@dataclass(frozen=True, slots=True)
class Track:
    """Snapshot of a track at one step (immutable: holding it never sees later changes)."""

    id: int
    label: str
    score: float  # exponentially smoothed detection score
    box: Box  # current estimate, clipped to the frame; for ended tracks the last matched one
    first_ms: int  # time of the first detection
    last_ms: int  # time of the last matched detection
    hits: int  # matched detections in total
    missed: int  # consecutive detection steps without a match
    velocity: tuple[float, float] = (0.0, 0.0)  # centre velocity, normalised units per second

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    """What one step did. A track appears in at most one list per step."""

    started: list[Track] = field(default_factory=list)  # confirmed this step
    updated: list[Track] = field(default_factory=list)  # confirmed before, matched this step
    ended: list[Track] = field(default_factory=list)  # missed too many steps; removed
    held: list[Track] = field(default_factory=list)  # predict_only: alive, not re-detected


class KalmanBox:
    """Constant-velocity Kalman filter on (cx, cy, w, h) with their velocities per second."""

    def __init__(self, box: Box) -> None:
        self.x: Array = np.zeros(8)
        self.x[:4] = _to_cxcywh(box)
        self.p: Array = np.diag(np.concatenate([_MEAS_STD**2, np.full(4, _INIT_VEL_STD**2)]))

    def predict(self, dt_s: float) -> None:
        if dt_s <= 0.0:
            return
        f = np.eye(8)
        f[:4, 4:] = np.eye(4) * dt_s
        q = np.zeros((8, 8))
        var = _ACCEL_STD**2
        # Discretised white-noise acceleration, per (position, velocity) pair.
        q[:4, :4] = np.diag(var * dt_s**4 / 4.0)
        q[:4, 4:] = q[4:, :4] = np.diag(var * dt_s**3 / 2.0)
        q[4:, 4:] = np.diag(var * dt_s**2)
        self.x = f @ self.x
        self.p = f @ self.p @ f.T + q

    def update(self, box: Box) -> None:
        z = _to_cxcywh(box)
        r = np.diag(_MEAS_STD**2)
        s = _H @ self.p @ _H.T + r
        k = self.p @ _H.T @ np.linalg.inv(s)
        self.x = self.x + k @ (z - _H @ self.x)
        self.p = (np.eye(8) - k @ _H) @ self.p
        self.p = (self.p + self.p.T) / 2.0  # keep it symmetric against rounding drift

    def stop(self) -> None:
        """Forget the velocity (the object is known to be still)."""
        self.x[4:] = 0.0

    def box(self) -> Box:
        cx, cy = float(self.x[0]), float(self.x[1])
        w, h = max(float(self.x[2]), _MIN_SIZE), max(float(self.x[3]), _MIN_SIZE)
        return (cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)


def _to_cxcywh(box: Box) -> Array:
    x1, y1, x2, y2 = box
    return np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0, max(x2 - x1, _MIN_SIZE), max(y2 - y1, _MIN_SIZE)])


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


@dataclass(slots=True)
class _Live:
    id: int
    label: str
    kf: KalmanBox
    score: float
    first_ms: int
    last_ms: int
    last_box: Box
    hits: int = 1
    missed: int = 0
    confirmed: bool = False

    def snapshot(self, *, last_matched: bool = False) -> Track:
        return Track(
            id=self.id,
            label=self.label,
            score=self.score,
            box=clip_box(self.last_box if last_matched else self.kf.box()),
            first_ms=self.first_ms,
            last_ms=self.last_ms,
            hits=self.hits,
            missed=self.missed,
            velocity=(float(self.kf.x[4]), float(self.kf.x[5])),
        )


class Tracker:
    """Multi-object tracker for one camera. Not thread-safe (it is a plain value)."""

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_missed: int = 5,
        min_hits: int = 2,
        *,
        score_alpha: float = 0.5,
        max_tracks: int = 256,
        first_id: int = 1,
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError("iou_threshold must be in (0, 1]")
        if max_missed < 0 or min_hits < 1 or max_tracks < 1 or not 0.0 < score_alpha <= 1.0:
            raise ValueError("need max_missed >= 0, min_hits >= 1, max_tracks >= 1, 0 < score_alpha <= 1")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.min_hits = min_hits
        self.score_alpha = score_alpha
        self.max_tracks = max_tracks
        self._next_id = first_id
        self._live: list[_Live] = []
        self._t_ms: int | None = None
        # Detections refused because max_tracks live tracks already exist (bounded state).
        self.dropped_detections = 0

    @property
    def next_id(self) -> int:
        """The id the next new track will get (persist it to keep ids unique across restarts)."""
        return self._next_id

    @property
    def tracks(self) -> list[Track]:
        """Confirmed live tracks, current estimates."""
        return [t.snapshot() for t in self._live if t.confirmed]

    def _advance(self, t_ms: int) -> None:
        dt_s = 0.0 if self._t_ms is None else max(0, t_ms - self._t_ms) / 1000.0
        self._t_ms = t_ms if self._t_ms is None else max(self._t_ms, t_ms)
        for t in self._live:
            t.kf.predict(dt_s)

    def update(self, detections: Sequence[Detection], t_ms: int) -> TrackUpdate:
        """One detection step at frame time ``t_ms``."""
        self._advance(t_ms)
        out = TrackUpdate()
        pairs = self._match(detections)
        matched_tracks = {ti for ti, _ in pairs}
        matched_dets = {di for _, di in pairs}

        for ti, di in pairs:
            tr, det = self._live[ti], detections[di]
            tr.kf.update(det.box)
            tr.hits += 1
            tr.missed = 0
            tr.last_ms = t_ms
            tr.last_box = tr.kf.box()
            tr.score += self.score_alpha * (det.score - tr.score)
            if tr.confirmed:
                out.updated.append(tr.snapshot())
            elif tr.hits >= self.min_hits:
                tr.confirmed = True
                out.started.append(tr.snapshot())

        keep: list[_Live] = []
        for ti, tr in enumerate(self._live):
            if ti not in matched_tracks:
                tr.missed += 1
                if not tr.confirmed:
                    continue  # tentative tracks must be seen on consecutive steps
                if tr.missed > self.max_missed:
                    out.ended.append(tr.snapshot(last_matched=True))
                    continue
            keep.append(tr)
        self._live = keep

        for di, det in enumerate(detections):
            if di in matched_dets:
                continue
            if len(self._live) >= self.max_tracks:
                self.dropped_detections += 1
                continue
            tr = _Live(
                id=self._next_id,
                label=det.label,
                kf=KalmanBox(det.box),
                score=det.score,
                first_ms=t_ms,
                last_ms=t_ms,
                last_box=det.box,
            )
            self._next_id += 1
            if self.min_hits <= 1:
                tr.confirmed = True
                out.started.append(tr.snapshot())
            self._live.append(tr)
        return out

    def predict_only(self, t_ms: int) -> TrackUpdate:
        """A frame on which detection was skipped because the motion gate saw no motion.

        No motion means nothing moved, so every track is held where it is: its velocity is
        zeroed (so the next prediction starts from rest, instead of drifting off an object
        that stopped) and its ``missed`` count does not grow (a person standing still must
        not time out merely because the gate stopped running the detector). Confirmed tracks
        are returned in ``held`` so the event policy can send keepalives; nothing ends here.
        """
        for tr in self._live:
            tr.kf.stop()
        self._advance(t_ms)
        out = TrackUpdate()
        for tr in self._live:
            if tr.confirmed:
                out.held.append(tr.snapshot())
        return out

    def end_all(self, t_ms: int) -> TrackUpdate:
        """End every confirmed track (camera stopped or source switched)."""
        self._advance(t_ms)
        out = TrackUpdate(ended=[t.snapshot(last_matched=True) for t in self._live if t.confirmed])
        self._live = []
        return out

    def _match(self, detections: Sequence[Detection]) -> list[tuple[int, int]]:
        if not self._live or not detections:
            return []
        pred = [t.kf.box() for t in self._live]
        # Different labels get IoU 0, so they can never be matched (same-label matching).
        scores = [
            [iou(p, d.box) if t.label == d.label else 0.0 for d in detections]
            for t, p in zip(self._live, pred, strict=True)
        ]
        pairs = linear_assignment([[1.0 - s for s in row] for row in scores])
        return [(ti, di) for ti, di in pairs if scores[ti][di] >= self.iou_threshold]
