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
  from sparse events that may straddle a track break.

Decisions only: ids, sequence numbers and timestamps are assigned by the edge.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.operators.geometry import Segment, anchor_point, committed_side
from pipeline.operators.schema import EventType
from pipeline.operators.tracking import Track, TrackUpdate


@dataclass(frozen=True, slots=True)
class _Emitted:
    cx: float
    cy: float
    label: str
    score: float
    t_ms: int


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
        max_tracks: int = 10_000,
    ) -> None:
        if move_threshold < 0 or score_delta < 0 or keepalive_ms <= 0 or max_tracks < 1:
            raise ValueError("thresholds must be >= 0, keepalive_ms and max_tracks > 0")
        self.move_threshold = move_threshold
        self.score_delta = score_delta
        self.keepalive_ms = keepalive_ms
        self.max_tracks = max_tracks
        self.lines: tuple[Segment, ...] = tuple(lines)
        self.line_margin = line_margin
        self._last: OrderedDict[int, _Emitted] = OrderedDict()
        # per track, the side of each line its anchor is committed to (updated every step)
        self._sides: dict[int, tuple[int | None, ...]] = {}
        # Announced tracks forgotten because max_tracks was reached (their end will be silent).
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._last)

    def decide(self, update: TrackUpdate, t_ms: int) -> list[tuple[EventType, Track]]:
        """Events to emit for one tracker step at frame time ``t_ms``, in emit order."""
        out: list[tuple[EventType, Track]] = []
        for tr in update.started:
            self._side_changed(tr)
            out.append(("track_started", tr))
            self._remember(tr, t_ms)
        for tr in update.updated:
            if tr.id not in self._last:
                self._side_changed(tr)
                # Never announced (policy restarted, or evicted): announce it now rather than
                # send an update for a track the cloud has never seen start.
                out.append(("track_started", tr))
                self._remember(tr, t_ms)
            elif self._side_changed(tr) | self._meaningful(tr, t_ms):
                out.append(("track_updated", tr))
                self._remember(tr, t_ms)
        for tr in update.held:
            # Held tracks were not re-detected, so only the keepalive can apply to them.
            last = self._last.get(tr.id)
            if last is not None and t_ms - last.t_ms >= self.keepalive_ms:
                out.append(("track_updated", tr))
                self._remember(tr, t_ms)
        for tr in update.ended:
            self._sides.pop(tr.id, None)
            if self._last.pop(tr.id, None) is not None:
                out.append(("track_ended", tr))
        return out

    def forget(self, track_id: int) -> None:
        self._last.pop(track_id, None)
        self._sides.pop(track_id, None)

    def _side_changed(self, tr: Track) -> bool:
        """Commit the track's anchor to a side of each line; True when one flipped this step."""
        if not self.lines:
            return False
        anchor = anchor_point(tr.box)
        old = self._sides.get(tr.id, (None,) * len(self.lines))
        new = tuple(committed_side(ln, anchor, self.line_margin, s) for ln, s in zip(self.lines, old, strict=True))
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
            self.evicted += 1
