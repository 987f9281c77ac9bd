"""Apply the configured rules (``cloud.rules``) to one verified event.

A rule looks at the event (label, camera, box, type, time) and its fused score and says whether
it *fires* and for which incident (``incident_key``). Whether a firing becomes an alert is the
incident ledger's decision (:mod:`pipeline.cloud_stage.alerting`): one alert per incident.

Stateful rules (dwell, line, count) keep per-camera state as JSON in a changelogged Faust table
(key ``rule|cam``), so a restarted worker resumes where the last one committed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from pipeline.operators.schema import Event
from pipeline.settings import RuleSettings


@dataclass(frozen=True, slots=True)
class Firing:
    rule: RuleSettings
    incident_key: str  # what one alert is about, e.g. "track-17"
    track_bound: bool  # incident ends with the track (ledger entry dropped at track_ended)
    detail: str = ""


def applies(rule: RuleSettings, event: Event) -> bool:
    if rule.cameras is not None and event.cam not in rule.cameras:
        return False
    if event.label not in rule.labels:
        return False
    return rule.schedule is None or in_schedule(rule.schedule, event.ts)


def in_schedule(schedule: tuple[str, str], ts_ms: int) -> bool:
    """Active between HH:MM and HH:MM UTC; a window may wrap past midnight."""
    t = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).strftime("%H:%M")
    start, end = schedule
    return start <= t < end if start <= end else t >= start or t < end


def _centre(event: Event) -> tuple[float, float]:
    x1, _, x2, y2 = event.box
    return ((x1 + x2) / 2, y2)  # bottom centre: where the object stands


def _inside(point: tuple[float, float], polygon: list[tuple[float, float]]) -> bool:
    x, y = point
    inside = False
    n = len(polygon)
    for i in range(n):
        (xa, ya), (xb, yb) = polygon[i], polygon[(i + 1) % n]
        if (ya > y) != (yb > y) and x < (xb - xa) * (y - ya) / (yb - ya) + xa:
            inside = not inside
    return inside


def _side(p: tuple[float, float], line: tuple[tuple[float, float], tuple[float, float]]) -> float:
    (ax, ay), (bx, by) = line
    return (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)


class StagedState:
    """Reads through to the table, buffers writes until :meth:`commit` (after the alert is out)."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self.pending: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.pending[key] if key in self.pending else self.table.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.pending[key] = value

    def commit(self) -> None:
        for key, value in self.pending.items():
            self.table[key] = value
        self.pending.clear()


class RulesEngine:
    """Evaluates every rule for one event; rule state (``rule|cam`` -> JSON-able dict) is staged."""

    def __init__(self, rules: list[RuleSettings]) -> None:
        self.rules = rules
        self.state: StagedState = StagedState({})

    def apply(self, event: Event, fused: float, state: StagedState) -> list[Firing]:
        self.state = state
        out: list[Firing] = []
        for rule in self.rules:
            if not applies(rule, event):
                continue
            firing = getattr(self, f"_{rule.kind}")(rule, event, fused)
            if firing is not None:
                out.append(firing)
        return out

    def _presence(self, rule: RuleSettings, e: Event, fused: float) -> Firing | None:
        if e.type == "track_ended" or fused < rule.min_score:
            return None
        return Firing(rule, f"track-{e.track}", True)

    def _zone(self, rule: RuleSettings, e: Event, fused: float) -> Firing | None:
        if e.type == "track_ended" or fused < rule.min_score or not rule.zone:
            return None
        if not _inside(_centre(e), list(rule.zone)):
            return None
        return Firing(rule, f"track-{e.track}", True, "in zone")

    def _state(self, rule: RuleSettings, cam: str) -> dict[str, Any]:
        return dict(self.state.get(f"{rule.id}|{cam}") or {})

    def _dwell(self, rule: RuleSettings, e: Event, fused: float) -> Firing | None:
        key, st = f"{rule.id}|{e.cam}", self._state(rule, e.cam)
        tid = str(e.track)
        inside = e.type != "track_ended" and bool(rule.zone) and _inside(_centre(e), list(rule.zone or []))
        if not inside:
            if tid in st:
                del st[tid]
                self.state[key] = st
            return None
        since = st.get(tid)
        if since is None:
            st[tid] = e.ts
            self.state[key] = st
            return None
        if fused >= rule.min_score and e.ts - int(since) >= rule.dwell_s * 1000:
            return Firing(rule, f"track-{e.track}", True, f"in zone for {(e.ts - int(since)) / 1000:.1f} s")
        return None

    def _line(self, rule: RuleSettings, e: Event, fused: float) -> Firing | None:
        if rule.line is None:
            return None
        key, st = f"{rule.id}|{e.cam}", self._state(rule, e.cam)
        tid = str(e.track)
        if e.type == "track_ended":
            if st.pop(tid, None) is not None:
                self.state[key] = st
            return None
        side = _side(_centre(e), rule.line)
        prev = st.get(tid)
        st[tid] = side
        self.state[key] = st
        if prev is None or side == 0 or prev == 0 or (prev > 0) == (side > 0) or fused < rule.min_score:
            return None
        direction = "left_to_right" if prev < 0 < side else "right_to_left"
        if rule.direction not in ("any", direction):
            return None
        return Firing(rule, f"track-{e.track}", True, f"crossed {direction}")

    def _count(self, rule: RuleSettings, e: Event, fused: float) -> Firing | None:
        if e.type == "track_ended" or fused < rule.min_score:
            return None
        if rule.zone and not _inside(_centre(e), list(rule.zone)):
            return None
        key, st = f"{rule.id}|{e.cam}", self._state(rule, e.cam)
        horizon = e.ts - int(rule.window_s * 1000)
        tracks = {t: ts for t, ts in st.items() if int(ts) >= horizon}
        tracks[str(e.track)] = e.ts
        self.state[key] = tracks
        if len(tracks) > rule.count:
            return Firing(rule, "count", False, f"{len(tracks)} tracks in {rule.window_s:g} s")
        return None
