"""Alert rules as pure state machines, evaluated once per (rule, event).

``evaluate(spec, obs, state) -> RuleResult(hit, state)``: the caller stores ``state`` (a dict of
JSON primitives, or None meaning "delete the key") under :func:`state_key` — in the cloud, a
Faust table. Same inputs give the same outputs, so reprocessing a partition after a crash
re-derives the same hits.

Kinds (all filtered by camera, label — an empty label list means any label — and schedule):

* ``presence``: the track's fused score reaches ``min_score`` (anchor inside ``zone`` if one is
  set). Once per track.
* ``zone``: the track's anchor is inside ``zone``. Once per stay; leaving and re-entering is a
  new stay, with ``hysteresis`` (entering and leaving need the anchor that far past the edge).
  A track first seen inside counts as entering.
* ``dwell``: the anchor has been inside ``zone`` for at least ``dwell_s``, judged at the
  track's events (the edge's keepalives bound the delay). Once per stay.
* ``line``: the anchor moved across ``line`` in ``direction`` (see :mod:`pipeline.operators.geometry`
  for left/right), with hysteresis: the side only changes once the anchor is ``hysteresis`` away
  from the line, and the move from the last point clearly on the old side to the first point
  clearly on the new one must pass between the segment's ends. Every crossing; feet flickering
  on the line count nothing.
* ``count``: more than ``count`` distinct tracks (anchor in ``zone`` if set) within the last
  ``window_s``. Fires when the count goes above the limit; re-arms when it drops back.

``schedule`` (HH:MM, HH:MM, UTC, start inclusive, end exclusive, wrapping midnight when start >
end, all day when equal) only gates hits; state keeps following the track outside it.
Scores below ``min_score`` likewise update geometry but cannot fire.

Incident keys (and state keys): ``<rule>|<cam>|<track>`` for track rules, ``<rule>|<cam>|zone``
for count rules. Anchors are box bottom-centres ("feet").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from pipeline.errors import ConfigError
from pipeline.operators.geometry import (
    Point,
    Segment,
    anchor_point,
    committed_side,
    crossing,
    in_zone_with_hysteresis,
    point_in_polygon,
    polygon_problem,
    signed_distance,
    validate_segment,
)
from pipeline.operators.schema import Box, Event, EventType
from pipeline.operators.windows import SlidingDistinct

RuleKind = Literal["presence", "zone", "dwell", "line", "count"]
LineDirection = Literal["any", "left_to_right", "right_to_left"]

_HHMM: Final = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DAY_MS: Final = 24 * 3600 * 1000
COUNT_MAX_TRACKS: Final = 5000  # distinct tracks remembered per count rule and camera


def parse_hhmm(text: str) -> int:
    """Minutes after midnight of ``"HH:MM"`` (24-hour); ValueError otherwise."""
    m = _HHMM.match(text)
    if m is None:
        raise ValueError(f"time {text!r} is not HH:MM (00:00-23:59)")
    return int(m.group(1)) * 60 + int(m.group(2))


def schedule_active(schedule: tuple[str, str] | None, ts_ms: int) -> bool:
    """Whether UTC time-of-day of ``ts_ms`` (epoch ms) is inside ``[start, end)``."""
    if schedule is None:
        return True
    start, end = parse_hhmm(schedule[0]), parse_hhmm(schedule[1])
    minute = (ts_ms % _DAY_MS) // 60_000
    if start == end:
        return True
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps midnight


class RuleSettingsLike(Protocol):
    """The fields of :class:`pipeline.settings.RuleSettings` that a rule needs (structural, so
    this pure module does not pull in the settings loader)."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> RuleKind: ...
    @property
    def labels(self) -> Sequence[str]: ...
    @property
    def cameras(self) -> Sequence[str] | None: ...
    @property
    def min_score(self) -> float: ...
    @property
    def zone(self) -> Sequence[Point] | None: ...
    @property
    def line(self) -> Segment | None: ...
    @property
    def direction(self) -> LineDirection: ...
    @property
    def dwell_s(self) -> float: ...
    @property
    def count(self) -> int: ...
    @property
    def window_s(self) -> float: ...
    @property
    def cooldown_s(self) -> float: ...
    @property
    def schedule(self) -> tuple[str, str] | None: ...
    @property
    def hysteresis(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One rule; mirrors :class:`pipeline.settings.RuleSettings` and checks what it cannot
    (polygon shape, line, schedule format, geometry present for the kind)."""

    id: str
    kind: RuleKind = "presence"
    labels: tuple[str, ...] = ("person",)
    cameras: tuple[str, ...] | None = None
    min_score: float = 0.5
    zone: tuple[Point, ...] | None = None
    line: Segment | None = None
    direction: LineDirection = "any"
    dwell_s: float = 10.0
    count: int = 5
    window_s: float = 60.0
    cooldown_s: float = 60.0
    schedule: tuple[str, str] | None = None
    hysteresis: float = 0.02

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ConfigError(f"rule {self.id!r}: {problem}")

    def _problem(self) -> str | None:
        if self.kind in ("zone", "dwell") and self.zone is None:
            return f"a {self.kind} rule needs a zone"
        if self.kind == "line" and self.line is None:
            return "a line rule needs a line"
        if self.zone is not None and (p := polygon_problem(self.zone)) is not None:
            return f"zone: {p}"
        try:
            if self.line is not None:
                validate_segment(self.line)
            if self.schedule is not None:
                parse_hhmm(self.schedule[0])
                parse_hhmm(self.schedule[1])
        except ValueError as exc:
            return str(exc)
        if self.dwell_s <= 0 or self.window_s <= 0 or self.count < 1 or self.cooldown_s < 0:
            return "dwell_s and window_s must be > 0, count >= 1, cooldown_s >= 0"
        if not 0 <= self.hysteresis < 0.5:
            return "hysteresis must be in [0, 0.5)"
        return None

    @classmethod
    def from_settings(cls, rs: RuleSettingsLike) -> RuleSpec:
        return cls(
            id=rs.id,
            kind=rs.kind,
            labels=tuple(rs.labels),
            cameras=None if rs.cameras is None else tuple(rs.cameras),
            min_score=rs.min_score,
            zone=None if rs.zone is None else tuple((float(x), float(y)) for x, y in rs.zone),
            line=rs.line,
            direction=rs.direction,
            dwell_s=rs.dwell_s,
            count=rs.count,
            window_s=rs.window_s,
            cooldown_s=rs.cooldown_s,
            schedule=rs.schedule,
            hysteresis=rs.hysteresis,
        )

    @property
    def cooldown_ms(self) -> int:
        return int(self.cooldown_s * 1000)

    def applies_to(self, cam: str, label: str) -> bool:
        """``cam``: a camera id or a :func:`camera_key`; the rule's ``cameras`` may name either (a bare
        id means that camera id on every site)."""
        if self.cameras is not None and cam not in self.cameras and cam.rpartition("/")[2] not in self.cameras:
            return False
        return not self.labels or label in self.labels


@dataclass(frozen=True, slots=True)
class Observation:
    """What a rule sees of one event."""

    cam: str
    track: int
    label: str
    score: float  # fused score (edge and cloud)
    box: Box
    ts_ms: int  # event capture time
    event_type: EventType = "track_updated"
    event_id: str = ""
    source: int | None = None  # the edge's track when ``track`` names its person (person links)

    @classmethod
    def from_event(cls, event: Event, fused_score: float) -> Observation:
        cam = camera_key(event.site, event.cam)
        return cls(cam, event.track, event.label, fused_score, event.box, event.ts, event.type, event.id)


@dataclass(frozen=True, slots=True)
class RuleHit:
    rule_id: str
    kind: RuleKind
    cam: str
    track: int  # the track whose event fired the rule
    incident_key: str
    ts_ms: int  # that event's time
    since_ms: int  # when the condition began (entry, dwell start, crossing, threshold passed)
    event_id: str
    label: str
    score: float
    detail: str


@dataclass(frozen=True, slots=True)
class RuleResult:
    hit: RuleHit | None
    state: dict[str, Any] | None  # None: delete the stored state


def camera_key(site: str, cam: str) -> str:
    """A camera's key in the cloud's state: ``site/cam``. Camera ids are unique within a site only
    (every node's first camera is ``cam-1`` by default), so rule state, person links, track
    verdicts, the seen-event index and live rules are all keyed by site and camera together:
    keyed by the id alone, two sites' ``cam-1`` shared one presence state, and the second
    site's person 1 raised no alert."""
    return f"{site}/{cam}"


def state_key(spec: RuleSpec, cam: str, track: int) -> str:
    """Where to store this rule's state for an event (``cam``: the :func:`camera_key`); also the
    hit's incident key."""
    return f"{spec.id}|{cam}|zone" if spec.kind == "count" else f"{spec.id}|{cam}|{track}"


def state_last_ms(state: Mapping[str, Any]) -> int:
    """Time of the last event that touched ``state`` (to expire keys whose track end was lost)."""
    return int(state.get("t", 0))


def evaluate(spec: RuleSpec, obs: Observation, state: Mapping[str, Any] | None) -> RuleResult:
    if not spec.applies_to(obs.cam, obs.label):
        return RuleResult(None, None if state is None else dict(state))
    st: Mapping[str, Any] = state or {}
    can_fire = schedule_active(spec.schedule, obs.ts_ms) and obs.score >= spec.min_score
    anchor = anchor_point(obs.box)
    if spec.kind == "count":
        return _count(spec, obs, st, can_fire, anchor)
    if spec.kind == "line":
        hit, new = _line(spec, obs, st, can_fire, anchor)
    elif spec.kind == "presence":
        hit, new = _presence(spec, obs, st, can_fire, anchor)
    else:
        hit, new = _stay(spec, obs, st, can_fire, anchor)
    # A track's state is useless once it ended; dropping it keeps the table bounded.
    return RuleResult(hit, None if obs.event_type == "track_ended" else new)


def _hit(spec: RuleSpec, obs: Observation, since_ms: int, detail: str) -> RuleHit:
    return RuleHit(
        rule_id=spec.id,
        kind=spec.kind,
        cam=obs.cam,
        track=obs.track,
        incident_key=state_key(spec, obs.cam, obs.track),
        ts_ms=obs.ts_ms,
        since_ms=since_ms,
        event_id=obs.event_id,
        label=obs.label,
        score=obs.score,
        detail=detail,
    )


def _in_zone(spec: RuleSpec, anchor: Point) -> bool:
    return spec.zone is None or point_in_polygon(anchor, spec.zone)


_Step = tuple[RuleHit | None, dict[str, Any]]


def _presence(spec: RuleSpec, obs: Observation, st: Mapping[str, Any], can_fire: bool, anchor: Point) -> _Step:
    fired = bool(st.get("fired", False))
    hit = None
    if not fired and can_fire and _in_zone(spec, anchor):
        hit = _hit(spec, obs, obs.ts_ms, f"{obs.label} present, score {obs.score:.2f}")
        fired = True
    return hit, {"fired": fired, "t": obs.ts_ms}


def _stay(spec: RuleSpec, obs: Observation, st: Mapping[str, Any], can_fire: bool, anchor: Point) -> _Step:
    """Zone entry and dwell: both are 'inside for at least X' (X = 0 for entry), once per stay.
    Membership has the rule's ``hysteresis`` band around the zone's edges (see
    :func:`pipeline.operators.geometry.in_zone_with_hysteresis`)."""
    first = st.get("inside") is None  # the track's first observation: no state to hold in the band
    was_inside = bool(st.get("inside", False))
    inside = spec.zone is None or in_zone_with_hysteresis(
        anchor, spec.zone, spec.hysteresis, None if first else was_inside
    )
    since: int | None = int(st["since"]) if was_inside and st.get("since") is not None else None
    fired = bool(st.get("fired", False)) and was_inside
    need_ms = int(spec.dwell_s * 1000) if spec.kind == "dwell" else 0
    hit = None
    if not inside:
        # A stay that reached the dwell time with no event inside after it (events are sparse)
        # is still a dwell: judged at the exit, from entry to exit as the edge saw them (both
        # one hysteresis band late, so the delays cancel).
        if since is not None and not fired and can_fire and spec.kind == "dwell" and obs.ts_ms - since >= need_ms:
            hit = _hit(spec, obs, since, f"stayed in zone for {(obs.ts_ms - since) / 1000:.1f} s")
        return hit, {"inside": False, "since": None, "fired": False, "t": obs.ts_ms}
    if since is None:
        since = obs.ts_ms
    if not fired and can_fire and obs.ts_ms - since >= need_ms:
        detail = f"in zone for {(obs.ts_ms - since) / 1000:.1f} s" if spec.kind == "dwell" else "entered zone"
        hit = _hit(spec, obs, since, detail)
        fired = True
    return hit, {"inside": True, "since": since, "fired": fired, "t": obs.ts_ms}


def _line(spec: RuleSpec, obs: Observation, st: Mapping[str, Any], can_fire: bool, anchor: Point) -> _Step:
    """State: ``side`` the anchor is committed to and ``ref``, the last anchor clearly on it;
    ``by``, the edge track that wrote them, and ``undo``, the state before that track began
    writing (see :func:`rewind_line_state`)."""
    assert spec.line is not None  # checked by RuleSpec
    side: int | None = st.get("side")
    ref = st.get("ref")
    if side is None and st.get("prev") is not None:  # state written before hysteresis existed
        prev = (float(st["prev"][0]), float(st["prev"][1]))
        side, ref = committed_side(spec.line, prev, 0.0, None), prev
    new = committed_side(spec.line, anchor, spec.hysteresis, side)
    by = obs.track if obs.source is None else obs.source
    # another track of the person takes over: keep what the previous one left, to rewind to
    undo = st.get("undo") if st.get("by") in (None, by) else {k: st.get(k) for k in ("side", "ref", "by")}
    hit = None
    if new is None:  # never clearly on a side yet
        return None, {"side": None, "ref": None, "t": obs.ts_ms, "by": by, "undo": undo}
    if side is not None and new != side and ref is not None:
        d = crossing(spec.line, (float(ref[0]), float(ref[1])), anchor)
        if d is not None and can_fire and spec.direction in ("any", d):
            hit = _hit(spec, obs, obs.ts_ms, f"crossed line {d}")
    if new != side or anchor_outside_band(spec, anchor):
        ref = [anchor[0], anchor[1]]
    return hit, {"side": new, "ref": ref, "t": obs.ts_ms, "by": by, "undo": undo}


def rewind_line_state(state: Mapping[str, Any] | None, newcomer: int) -> dict[str, Any] | None:
    """A person's line state once ``newcomer``, wrongly linked to the person, has left it
    (:mod:`pipeline.operators.person_links`): back to what the person's own track had left, so
    the path holds no point of someone else's and the person's next crossing still counts.
    Forgetting the side instead (the old way) lost a crossing made right at that report
    (PETS09-S2L1 at 384 px). None (start again) when the newcomer's points are all there is."""
    if state is None or state.get("by") != newcomer:
        return None if state is None else dict(state)
    undo = state.get("undo")
    if not isinstance(undo, Mapping) or undo.get("by") in (None, newcomer):
        return None
    return {"side": undo.get("side"), "ref": undo.get("ref"), "t": state.get("t", 0), "by": undo["by"], "undo": None}


def anchor_outside_band(spec: RuleSpec, anchor: Point) -> bool:
    assert spec.line is not None
    return abs(signed_distance(spec.line, anchor)) >= spec.hysteresis


def _count(spec: RuleSpec, obs: Observation, st: Mapping[str, Any], can_fire: bool, anchor: Point) -> RuleResult:
    window_ms = int(spec.window_s * 1000)
    window = SlidingDistinct.from_state(st.get("window"), window_ms, COUNT_MAX_TRACKS)
    if can_fire and _in_zone(spec, anchor):
        window.add(str(obs.track), obs.ts_ms)
    n = window.count(obs.ts_ms)
    above = bool(st.get("above", False))
    hit = None
    if n > spec.count and not above and can_fire:
        hit = _hit(spec, obs, obs.ts_ms, f"{n} distinct {'/'.join(spec.labels) or 'objects'} in {spec.window_s:g} s")
        above = True
    elif n <= spec.count:
        above = False
    return RuleResult(hit, {"window": window.to_state(), "above": above, "t": obs.ts_ms})
