"""Which tracker results become events on the wire.

The tracker changes every track on every detection step (5 fps); sending all of that would
cost bandwidth and outbox space for nothing the cloud can use. The policy here emits:

* ``track_started`` when the tracker confirms a track (or the policy first hears of it);
* ``track_updated`` only on a meaningful change since the last event *emitted for that track*:
  centre moved more than ``move_threshold`` (normalised distance), label changed, score
  changed by more than ``score_delta``, or ``keepalive_ms`` passed (so the cloud can tell a
  still object from a lost one, and dwell rules keep advancing);
* ``track_ended`` when the tracker ends a track that was announced;
* ``track_updated`` at once when a track's anchor (box bottom-centre) commits to the other side
  of one of the camera's ``lines`` (hysteresis ``line_margin``, see
  :func:`pipeline.operators.geometry.committed_side`). The cloud's line rules then see a point on
  each side of every crossing the edge saw at its full detection rate, instead of inferring it
  from sparse events that may straddle a track break;
* likewise ``track_updated`` at once when the anchor enters or leaves one of the camera's
  ``zones`` (same margin, :func:`pipeline.operators.geometry.in_zone_with_hysteresis`): a zone
  or dwell rule then times a stay from the step the edge saw it begin and end, not from the next
  sparse event (up to ``keepalive_ms`` later), which decides dwells near the rule's threshold.

Each decision also says whether the event carries a fresh crop (:class:`Emission`): the first
event of a track does, and so does a later one when the track shows a **clearly better view**
(:func:`better_view`), at most ``crop_refreshes`` times per track. The cloud's heavy model judges a
track on its crop, and the first crop of a person who walks in at the frame border is a sliver
of a body: on PETS09-S2L1 that crop kept 4 of 10 people under the rules' fused score 0.5 for
their whole track (no presence alert, a missed line crossing). The rule is Frigate's for its
"best thumbnail": a box that touches the frame border is worse than one that does not, and a
box twice the area is better, unless the detector is much less sure of it.

Decisions only: ids, sequence numbers and timestamps are assigned by the edge.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pipeline.operators.geometry import (
    Point,
    Segment,
    anchor_point,
    committed_side,
    in_zone_with_hysteresis,
    on_border,
)
from pipeline.operators.schema import Box, EventType
from pipeline.operators.tracking import Track, TrackUpdate


class Emission(NamedTuple):
    """One event to emit: its type, the track, and whether to attach a fresh crop."""

    type: EventType
    track: Track
    crop: bool


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def better_view(old: Box, old_score: float, new: Box, new_score: float, margin: float, score_drop: float) -> bool:
    """Is ``new`` a clearly better picture of the object than the crop already sent from ``old``?

    Never when the new box is cut off by the border or the detector's score fell by more than
    ``score_drop``; otherwise when the old box was cut off, or the new one has twice its area
    (the object came closer: twice the pixels for the heavy model).
    """
    if on_border(new, margin) or new_score < old_score - score_drop:
        return False
    return on_border(old, margin) or _area(new) >= 2 * _area(old)


@dataclass(frozen=True, slots=True)
class _Emitted:
    cx: float
    cy: float
    label: str
    score: float
    t_ms: int


@dataclass(frozen=True, slots=True)
class _View:
    """The box and score of the track's last crop, and how many crops it has had."""

    box: Box
    score: float
    crops: int


class TrackEventPolicy:
    """Per-camera emission policy; state is the last emitted snapshot of each live track."""

    def __init__(
        self,
        move_threshold: float = 0.05,
        score_delta: float = 0.15,
        keepalive_ms: int = 5000,
        *,
        lines: Sequence[Segment] = (),
        line_margin: float = 0.02,
        zones: Sequence[Sequence[Point]] = (),
        max_tracks: int = 10_000,
        crop_refreshes: int = 2,
        border_margin: float = 0.01,
    ) -> None:
        if move_threshold < 0 or score_delta < 0 or keepalive_ms <= 0 or max_tracks < 1 or crop_refreshes < 0:
            raise ValueError("thresholds and crop_refreshes must be >= 0, keepalive_ms and max_tracks > 0")
        self.move_threshold = move_threshold
        self.score_delta = score_delta
        self.keepalive_ms = keepalive_ms
        self.max_tracks = max_tracks
        self.lines: tuple[Segment, ...] = tuple(lines)
        self.line_margin = line_margin
        self.zones: tuple[Sequence[Point], ...] = tuple(zones)
        self.crop_refreshes, self.border_margin = crop_refreshes, border_margin
        self._views: dict[int, _View] = {}
        self._last: OrderedDict[int, _Emitted] = OrderedDict()
        # per track, the side of each line its anchor is committed to, then its membership of
        # each zone (updated every step)
        self._sides: dict[int, tuple[int | None, ...]] = {}
        # Announced tracks forgotten because max_tracks was reached (their end will be silent).
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._last)

    def decide(self, update: TrackUpdate, t_ms: int) -> list[Emission]:
        """Events to emit for one tracker step at frame time ``t_ms``, in emit order."""
        out: list[Emission] = []
        for tr in update.started:
            self._side_changed(tr)
            out.append(self._started(tr, t_ms))
        for tr in update.updated:
            if tr.id not in self._last:
                self._side_changed(tr)
                # Never announced (policy restarted, or evicted): announce it now rather than
                # send an update for a track the cloud has never seen start.
                out.append(self._started(tr, t_ms))
                continue
            recrop = self._better_view(tr)
            if self._side_changed(tr) | self._meaningful(tr, t_ms) | recrop:
                out.append(Emission("track_updated", tr, recrop))
                self._remember(tr, t_ms)
                if recrop:
                    self._views[tr.id] = _View(tr.box, tr.score, self._views[tr.id].crops + 1)
        for tr in update.held:
            # Held tracks were not re-detected (a predicted box, no new picture), so only the
            # keepalive can apply to them.
            last = self._last.get(tr.id)
            if last is not None and t_ms - last.t_ms >= self.keepalive_ms:
                out.append(Emission("track_updated", tr, False))
                self._remember(tr, t_ms)
        for tr in update.ended:
            self._sides.pop(tr.id, None)
            self._views.pop(tr.id, None)
            if self._last.pop(tr.id, None) is not None:
                out.append(Emission("track_ended", tr, False))
        return out

    def forget(self, track_id: int) -> None:
        self._last.pop(track_id, None)
        self._sides.pop(track_id, None)
        self._views.pop(track_id, None)

    def _started(self, tr: Track, t_ms: int) -> Emission:
        self._views[tr.id] = _View(tr.box, tr.score, 1)
        self._remember(tr, t_ms)
        return Emission("track_started", tr, True)

    def _better_view(self, tr: Track) -> bool:
        view = self._views.get(tr.id)
        if view is None or view.crops > self.crop_refreshes:
            return False
        return better_view(view.box, view.score, tr.box, tr.score, self.border_margin, self.score_delta)

    def _side_changed(self, tr: Track) -> bool:
        """Commit the track's anchor to a side of each line and to in/out of each zone; True when
        one flipped this step (never on the track's first step)."""
        if not self.lines and not self.zones:
            return False
        anchor = anchor_point(tr.box)
        n = len(self.lines)
        old = self._sides.get(tr.id)
        if old is None or len(old) != n + len(self.zones):  # first step, or the config changed
            old = (None,) * (n + len(self.zones))
        sides = [committed_side(ln, anchor, self.line_margin, s) for ln, s in zip(self.lines, old[:n], strict=True)]
        inside = [
            int(in_zone_with_hysteresis(anchor, zone, self.line_margin, None if was is None else bool(was)))
            for zone, was in zip(self.zones, old[n:], strict=True)
        ]
        new = (*sides, *inside)
        self._sides[tr.id] = new
        return any(a is not None and b is not None and a != b for a, b in zip(old, new, strict=True))

    def _meaningful(self, tr: Track, t_ms: int) -> bool:
        last = self._last[tr.id]
        cx, cy = tr.centre
        return (
            math.hypot(cx - last.cx, cy - last.cy) > self.move_threshold
            or tr.label != last.label
            or abs(tr.score - last.score) > self.score_delta
            or t_ms - last.t_ms >= self.keepalive_ms
        )

    def _remember(self, tr: Track, t_ms: int) -> None:
        cx, cy = tr.centre
        self._last[tr.id] = _Emitted(cx, cy, tr.label, tr.score, t_ms)
        self._last.move_to_end(tr.id)
        while len(self._last) > self.max_tracks:
            old_id, _ = self._last.popitem(last=False)
            self._sides.pop(old_id, None)
            self._views.pop(old_id, None)
            self.evicted += 1
