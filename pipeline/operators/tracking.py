"""Multi-object tracker: a constant-velocity Kalman filter per track (:mod:`pipeline.operators.kalman`)
and optimal matching (Hungarian, :mod:`pipeline.operators.assignment`) within each label, in three
stages that each keep an identity the one before would lose (measured on PETS09-S2L1 by
``python -m benchmarks --only accuracy``; figures in ``benchmarks/RESULTS.md``):

1. **High-score detections** (``score >= high_score``) against live tracks by IoU with the predicted
   box, plus an appearance term when detections carry a colour histogram (two people crossing).
2. **Low-score detections** (ByteTrack's second association) against confirmed tracks still
   unmatched, by IoU only (``low_iou_threshold``): a person whose score dips behind a pole keeps
   the track; a low-score detection never starts one.
3. **Re-identification of lost tracks** (missed more than ``max_missed`` steps, kept up to
   ``lost_ms``): remaining high-score detections near where the track should be (centre distance
   in track heights, growing with the gap), of a similar height and, when both have one, a
   similar appearance. A track found again restarts its filter from the two real observations
   around the gap (OC-SORT's observation-centric re-update), so it does not jump.

Pure: the caller passes the frame time in (``t_ms``, never decreasing; a step back is treated as
zero elapsed time). Boxes are normalised x1, y1, x2, y2. Bounded: at most ``max_tracks`` live and
lost tracks; detections beyond are refused and counted.

Lifecycle of a track:

* An unmatched high-score detection opens a *tentative* track. It is confirmed after ``min_hits``
  matches on consecutive detection steps (reported once in ``started``); a tentative track
  that misses one step is dropped silently, which filters one-frame false positives.
* A confirmed track that is matched is reported in ``updated`` (also when it was re-identified
  after being lost: same id); one that misses more than ``max_missed`` steps is *lost* (not
  reported, still matchable by stage 3) and ends (reported in ``ended``) once ``lost_ms`` have
  passed since it was last seen.
* :meth:`Tracker.predict_only` is for frames the motion gate skipped: see its docstring.

Track ids come from a counter (``first_id`` upwards) that never goes back, so ids are never
reused within a tracker; tentative tracks that die also consume ids, so there can be gaps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipeline.operators.appearance import Feature, blend, similarity
from pipeline.operators.assignment import linear_assignment
from pipeline.operators.geometry import on_border
from pipeline.operators.kalman import KalmanBox
from pipeline.operators.schema import Box
from pipeline.operators.track_types import Detection, Track, TrackUpdate, clip_box, iou

# the tracker's values live in track_types; importers keep naming them from here
__all__ = ["Detection", "Track", "TrackUpdate", "Tracker", "clip_box", "iou"]

# Re-identification gate (stage 3), in track heights: a walking person covers about half their
# height per second in this kind of view, so the allowance grows with the gap.
_REID_BASE_DIST = 0.6
_REID_DIST_PER_S = 0.6
_REID_MAX_HEIGHT_RATIO = 1.5
_NO_MATCH = 1e6


@dataclass(slots=True)
class _Live:
    id: int
    label: str
    kf: KalmanBox
    score: float
    first_ms: int
    last_ms: int
    last_box: Box  # the last matched detection's box (observation, not estimate)
    first_box: Box  # where it was first seen (to link it to a track that vanished there)
    hits: int = 1
    missed: int = 0
    confirmed: bool = False
    feature: Feature | None = None
    link: int | None = None

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
            feature=self.feature,
            link=self.link,
        )


class Tracker:
    """Multi-object tracker for one camera. Not thread-safe (it is a plain value)."""

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_missed: int = 5,
        min_hits: int = 2,
        *,
        high_score: float | None = None,
        low_iou_threshold: float = 0.5,
        lost_ms: int = 0,
        appearance_weight: float = 0.5,
        reid_min_similarity: float = 0.75,
        link_min_similarity: float = 0.5,
        score_alpha: float = 0.5,
        feature_alpha: float = 0.2,
        link_ms: int = 10_000,
        max_tracks: int = 256,
        first_id: int = 1,
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0 or not 0.0 < low_iou_threshold <= 1.0:
            raise ValueError("iou thresholds must be in (0, 1]")
        if max_missed < 0 or min_hits < 1 or max_tracks < 1 or not 0.0 < score_alpha <= 1.0 or lost_ms < 0:
            raise ValueError("need max_missed >= 0, min_hits >= 1, max_tracks >= 1, 0 < score_alpha <= 1, lost_ms >= 0")
        self.iou_threshold = iou_threshold
        self.low_iou_threshold = low_iou_threshold
        self.max_missed = max_missed
        self.min_hits = min_hits
        self.high_score = high_score
        self.lost_ms = lost_ms
        self.appearance_weight = appearance_weight
        self.reid_min_similarity = reid_min_similarity
        self.link_min_similarity = link_min_similarity
        self.score_alpha = score_alpha
        self.feature_alpha = feature_alpha
        self.link_ms = link_ms
        self.max_tracks = max_tracks
        # recently ended tracks (last box, time) a new track may be linked to; bounded by max_tracks
        self._ended: list[_Live] = []
        self._next_id = first_id
        self._live: list[_Live] = []
        self._t_ms: int | None = None
        # Detections refused because max_tracks live tracks already exist (bounded state).
        self.dropped_detections = 0
        # Lost tracks found again by stage 3 (same id instead of a new track).
        self.reidentified = 0

    @property
    def next_id(self) -> int:
        """The id the next new track will get (persist it to keep ids unique across restarts)."""
        return self._next_id

    @property
    def tracks(self) -> list[Track]:
        """Confirmed tracks that are not lost, current estimates."""
        return [t.snapshot() for t in self._live if t.confirmed and t.missed <= self.max_missed]

    def _advance(self, t_ms: int) -> None:
        dt_s = 0.0 if self._t_ms is None else max(0, t_ms - self._t_ms) / 1000.0
        self._t_ms = t_ms if self._t_ms is None else max(self._t_ms, t_ms)
        for t in self._live:
            t.kf.predict(dt_s)

    def _is_high(self, det: Detection) -> bool:
        return self.high_score is None or det.score >= self.high_score

    def update(self, detections: Sequence[Detection], t_ms: int) -> TrackUpdate:
        """One detection step at frame time ``t_ms``."""
        self._advance(t_ms)
        out = TrackUpdate()
        high = [i for i, d in enumerate(detections) if self._is_high(d)]
        low = [i for i, d in enumerate(detections) if not self._is_high(d)]
        active = [i for i, t in enumerate(self._live) if t.missed <= self.max_missed]
        pairs = self._match_iou(active, high, detections, self.iou_threshold, appearance=True)
        matched_tracks = {ti for ti, _ in pairs}
        free_tracks = [i for i in active if self._live[i].confirmed and i not in matched_tracks]
        pairs += self._match_iou(free_tracks, low, detections, self.low_iou_threshold, appearance=False)
        matched_tracks = {ti for ti, _ in pairs}
        matched_dets = {di for _, di in pairs}
        # stage 3: confirmed tracks not seen this step after missing at least one (coasting or lost)
        lost = [i for i, t in enumerate(self._live) if t.confirmed and t.missed > 0 and i not in matched_tracks]
        pairs += self._reidentify(lost, [d for d in high if d not in matched_dets], detections, t_ms)
        matched_tracks = {ti for ti, _ in pairs}
        matched_dets = {di for _, di in pairs}

        confirmed_now: list[_Live] = []
        for ti, di in pairs:
            tr, det = self._live[ti], detections[di]
            if tr.missed > 0:  # found after a gap: restart from observations, not the drifted state
                tr.kf.restart_from(tr.last_box, det.box, max(0, t_ms - tr.last_ms) / 1000.0)
            else:
                tr.kf.update(det.box)
            tr.hits += 1
            tr.missed = 0
            tr.last_ms = t_ms
            tr.last_box = det.box
            if self._is_high(det):
                tr.score += self.score_alpha * (det.score - tr.score)
                tr.feature = blend(tr.feature, det.feature, self.feature_alpha)
            if tr.confirmed:
                out.updated.append(tr.snapshot())
            elif tr.hits >= self.min_hits:
                tr.confirmed = True
                confirmed_now.append(tr)
        # Links only once every track found this step is marked found: stage 3's re-identified
        # tracks come last in ``pairs``, and linking inside the loop named such a track, back
        # in this very step, as the one the newcomer continues (PETS09-S2L1 at 384 px: the cloud
        # then undid the link at the old track's next report and lost its line crossing).
        for tr in confirmed_now:
            tr.link = self._predecessor(tr, t_ms)
            out.started.append(tr.snapshot())

        keep: list[_Live] = []
        for ti, tr in enumerate(self._live):
            if ti not in matched_tracks:
                tr.missed += 1
                if not tr.confirmed:
                    continue  # tentative tracks must be seen on consecutive steps
                if tr.missed > self.max_missed and t_ms - tr.last_ms > self.lost_ms:
                    out.ended.append(tr.snapshot(last_matched=True))
                    self._ended.append(tr)
                    continue
            keep.append(tr)
        self._live = keep
        self._ended = [e for e in self._ended if t_ms - e.last_ms <= self.link_ms][-self.max_tracks :]

        for di in high:
            if di in matched_dets:
                continue
            det = detections[di]
            if len(self._live) >= self.max_tracks:
                self.dropped_detections += 1
                continue
            tr = _Live(id=self._next_id, label=det.label, kf=KalmanBox(det.box), score=det.score, first_ms=t_ms,
                       first_box=det.box,
                       last_ms=t_ms, last_box=det.box, feature=det.feature)  # fmt: skip
            self._next_id += 1
            if self.min_hits <= 1:
                tr.confirmed = True
                tr.link = self._predecessor(tr, t_ms)
                out.started.append(tr.snapshot())
            self._live.append(tr)
        return out

    def predict_only(self, t_ms: int) -> TrackUpdate:
        """A frame on which detection was skipped because the motion gate saw no motion.

        No motion means nothing moved, so every track is held where it is: its velocity is
        zeroed (so the next prediction starts from rest, instead of drifting off an object
        that stopped) and its ``missed`` count does not grow (a person standing still must
        not time out merely because the gate stopped running the detector). Confirmed tracks
        that are not lost are returned in ``held`` so the event policy can send keepalives;
        nothing ends here.
        """
        for tr in self._live:
            tr.kf.stop()
        self._advance(t_ms)
        return TrackUpdate(held=self.tracks)

    def predicted(self, t_ms: int) -> list[Track]:
        """Confirmed, not lost tracks as the filter predicts them at ``t_ms``; no state changes.

        For frames between detection steps (a display, or scoring every frame of a video that
        was detected at ``detect_fps``): constant-velocity extrapolation of each estimate.
        """
        dt_s = 0.0 if self._t_ms is None else max(0, t_ms - self._t_ms) / 1000.0
        return [replace(t.snapshot(), box=clip_box(t.kf.box_at(dt_s)))
                for t in self._live if t.confirmed and t.missed <= self.max_missed]  # fmt: skip

    def export_state(self) -> dict[str, Any]:
        """Confirmed tracks and the id counter as JSON-ready data (a node saves it to survive a restart)."""
        return {
            "v": 1,
            "next_id": self._next_id,
            "tracks": [
                {"id": t.id, "label": t.label, "score": t.score, "first_ms": t.first_ms, "last_ms": t.last_ms,
                 "box": list(t.last_box), "hits": t.hits, "feature": list(t.feature) if t.feature else None}
                for t in self._live
                if t.confirmed
            ],
        }  # fmt: skip

    def restore_state(self, state: Mapping[str, Any]) -> int:
        """Take back tracks saved by :meth:`export_state` (a restarted node); returns how many.

        Restored tracks keep their ids and count as *lost*: not reported until a detection
        re-identifies them (stage 3, from their last box), and ended ``lost_ms`` after they were
        last seen, as any lost track. Their velocity is not trusted across a restart. Raises
        ValueError on data that is not such a state.
        """
        try:
            tracks = [
                _Live(id=int(d["id"]), label=str(d["label"]), kf=KalmanBox(_box(d["box"])), score=float(d["score"]),
                      first_box=_box(d["box"]),
                      first_ms=int(d["first_ms"]), last_ms=int(d["last_ms"]), last_box=_box(d["box"]),
                      hits=int(d["hits"]), missed=self.max_missed + 1, confirmed=True,
                      feature=tuple(float(v) for v in d["feature"]) if d.get("feature") else None)
                for d in state["tracks"]
            ]  # fmt: skip
            next_id = int(state["next_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a tracker state: {exc!r}") from exc
        known = {t.id for t in self._live}
        fresh = [t for t in tracks if t.id not in known][: max(0, self.max_tracks - len(self._live))]
        self._live.extend(fresh)
        self._next_id = max(self._next_id, next_id, *(t.id + 1 for t in fresh))
        return len(fresh)

    def end_all(self, t_ms: int) -> TrackUpdate:
        """End every confirmed track (camera stopped or source switched)."""
        self._advance(t_ms)
        out = TrackUpdate(ended=[t.snapshot(last_matched=True) for t in self._live if t.confirmed])
        self._live = []
        return out

    # ------------------------------------------------------------------ association

    def _match_iou(self, tracks: list[int], dets: list[int], detections: Sequence[Detection], threshold: float,
                   *, appearance: bool) -> list[tuple[int, int]]:  # fmt: skip
        """Optimal pairs by ``1 - IoU`` (+ appearance distance), same label, IoU >= ``threshold``."""
        if not tracks or not dets:
            return []
        cost: list[list[float]] = []
        for ti in tracks:
            tr = self._live[ti]
            pred = tr.kf.box()
            row = []
            for di in dets:
                d = detections[di]
                o = iou(pred, d.box) if tr.label == d.label else 0.0
                if o < threshold:
                    row.append(_NO_MATCH)
                    continue
                sim = similarity(tr.feature, d.feature) if appearance else None
                row.append(1.0 - o + (self.appearance_weight * (1.0 - sim) if sim is not None else 0.0))
            cost.append(row)
        return [(tracks[r], dets[c]) for r, c in linear_assignment(cost) if cost[r][c] < _NO_MATCH]

    def _predecessor(self, new: _Live, t_ms: int) -> int | None:
        """The lost or recently ended track (same label, gone within ``link_ms``) a newly confirmed
        track most probably continues, by the re-identification distance gate and a looser
        appearance test (``link_min_similarity``: clearly different colours are someone else);
        None if there is none. Stage 3 already re-uses the id when appearance agrees closely;
        this weaker link lets the cloud keep one *incident* (presence, dwell) across a break it
        could not mend, so it is reported, not acted on, here.

        Two cases are never links, both measured on PETS09-S2L1 where they were the wrong links
        that cost people their presence alert: a track whose first box touches the frame border
        walked into the view (there one person leaves and another enters at the same spot a
        second later, in similar clothes: similarity 0.83), and a track another track already
        continues (a link is one to one; four false tracks claimed one lost person)."""
        if on_border(new.first_box):
            return None
        claimed = {t.link for t in (*self._live, *self._ended) if t is not new and t.link is not None}
        best: tuple[float, int] | None = None
        for old in [*self._ended, *(t for t in self._live if t.confirmed and t.missed > 0)]:
            gap_s = (t_ms - old.last_ms) / 1000.0
            if old is new or old.label != new.label or not 0 <= gap_s * 1000 <= self.link_ms or old.id in claimed:
                continue
            sim = similarity(old.feature, new.feature)
            if sim is not None and sim < self.link_min_similarity:
                continue
            h = max(old.last_box[3] - old.last_box[1], 1e-6)
            dist = _centre_dist(old.last_box, new.first_box) / h
            if dist <= _REID_BASE_DIST + _REID_DIST_PER_S * gap_s and (best is None or dist < best[0]):
                best = (dist, old.id)
        return None if best is None else best[1]

    def _reidentify(self, tracks: list[int], dets: list[int], detections: Sequence[Detection],
                    t_ms: int) -> list[tuple[int, int]]:  # fmt: skip
        """Stage 3: lost (or coasting) tracks vs unclaimed high-score detections by motion + appearance."""
        if not tracks or not dets:
            return []
        cost: list[list[float]] = []
        for ti in tracks:
            tr = self._live[ti]
            gap_s = max(0, t_ms - tr.last_ms) / 1000.0
            pred = tr.kf.box()
            last = tr.last_box
            h = max(last[3] - last[1], 1e-6)
            allow = _REID_BASE_DIST + _REID_DIST_PER_S * gap_s
            row = []
            for di in dets:
                d = detections[di]
                dh = max(d.box[3] - d.box[1], 1e-6)
                sim = similarity(tr.feature, d.feature)
                dist = min(_centre_dist(pred, d.box), _centre_dist(last, d.box)) / h
                ok = (d.label == tr.label and dist <= allow and max(dh / h, h / dh) <= _REID_MAX_HEIGHT_RATIO
                      and (sim is None or sim >= self.reid_min_similarity))  # fmt: skip
                row.append(dist / allow + (1.0 - sim if sim is not None else 0.5) if ok else _NO_MATCH)
            cost.append(row)
        pairs = [(tracks[r], dets[c]) for r, c in linear_assignment(cost) if cost[r][c] < _NO_MATCH]
        self.reidentified += sum(1 for ti, _ in pairs if self._live[ti].missed > self.max_missed)
        return pairs


def _box(v: Any) -> Box:
    x1, y1, x2, y2 = (float(c) for c in v)
    return (x1, y1, x2, y2)


def _centre_dist(a: Box, b: Box) -> float:
    return float(((a[0] + a[2] - b[0] - b[2]) ** 2 + (a[1] + a[3] - b[1] - b[3]) ** 2) ** 0.5 / 2.0)
