"""Which tracker results become events on the wire.

The tracker changes every track on every detection step (5 fps); sending all of that would
cost bandwidth and outbox space for nothing the cloud can use. The policy here emits:

* ``track_started`` when the tracker confirms a track (or the policy first hears of it);
* ``track_updated`` only on a meaningful change since the last event *emitted for that track*:
  centre moved more than ``move_threshold`` (normalised distance), label changed, score
  changed by more than ``score_delta``, or ``keepalive_ms`` passed (so the cloud can tell a
  still object from a lost one, and dwell rules keep advancing);
* ``track_ended`` when the tracker ends a track that was announced.

Decisions only: ids, sequence numbers and timestamps are assigned by the edge.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

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
        max_tracks: int = 10_000,
    ) -> None:
        if move_threshold < 0 or score_delta < 0 or keepalive_ms <= 0 or max_tracks < 1:
            raise ValueError("thresholds must be >= 0, keepalive_ms and max_tracks > 0")
        self.move_threshold = move_threshold
        self.score_delta = score_delta
        self.keepalive_ms = keepalive_ms
        self.max_tracks = max_tracks
        self._last: OrderedDict[int, _Emitted] = OrderedDict()
        # Announced tracks forgotten because max_tracks was reached (their end will be silent).
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._last)

    def decide(self, update: TrackUpdate, t_ms: int) -> list[tuple[EventType, Track]]:
        """Events to emit for one tracker step at frame time ``t_ms``, in emit order."""
        out: list[tuple[EventType, Track]] = []
        for tr in update.started:
            out.append(("track_started", tr))
            self._remember(tr, t_ms)
        for tr in update.updated:
            if tr.id not in self._last:
                # Never announced (policy restarted, or evicted): announce it now rather than
                # send an update for a track the cloud has never seen start.
                out.append(("track_started", tr))
                self._remember(tr, t_ms)
            elif self._meaningful(tr, t_ms):
                out.append(("track_updated", tr))
                self._remember(tr, t_ms)
        for tr in update.held:
            # Held tracks were not re-detected, so only the keepalive can apply to them.
            last = self._last.get(tr.id)
            if last is not None and t_ms - last.t_ms >= self.keepalive_ms:
                out.append(("track_updated", tr))
                self._remember(tr, t_ms)
        for tr in update.ended:
            if self._last.pop(tr.id, None) is not None:
                out.append(("track_ended", tr))
        return out

    def forget(self, track_id: int) -> None:
        self._last.pop(track_id, None)

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
            self._last.popitem(last=False)
            self.evicted += 1
