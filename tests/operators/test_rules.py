from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.operators.rules import (
    Observation,
    RuleHit,
    RuleSpec,
    evaluate,
    parse_hhmm,
    schedule_active,
    state_key,
)
from pipeline.operators.schema import Event, EventType
from pipeline.settings import RuleSettings

pytestmark = pytest.mark.unit

ZONE = ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0))  # bottom-right quarter
LINE = ((0.5, 0.0), (0.5, 1.0))  # vertical, drawn top to bottom: screen-right is its left side
DAY = 86_400_000


def obs(
    x: float,
    y: float = 0.8,
    *,
    t: int = 0,
    track: int = 1,
    score: float = 0.9,
    label: str = "person",
    cam: str = "cam-1",
    etype: EventType = "track_updated",
) -> Observation:
    """An observation whose anchor (bottom centre) is at (x, y)."""
    return Observation(cam, track, label, score, (x - 0.05, y - 0.2, x + 0.05, y), t, etype, f"e{track}-{t}")


def run(spec: RuleSpec, seq: list[Observation], *, via_json: bool = False) -> list[RuleHit]:
    """Evaluate like the cloud does: state stored per state_key, deleted on None."""
    table: dict[str, Any] = {}
    hits = []
    for o in seq:
        key = state_key(spec, o.cam, o.track)
        res = evaluate(spec, o, table.get(key))
        if res.hit:
            hits.append(res.hit)
        if res.state is None:
            table.pop(key, None)
        else:
            table[key] = json.loads(json.dumps(res.state)) if via_json else res.state
    return hits


def test_spec_from_settings_and_validation() -> None:
    rs = RuleSettings(id="door", kind="line", line=((0.5, 0.0), (0.5, 1.0)), direction="left_to_right")
    spec = RuleSpec.from_settings(rs)
    assert (spec.id, spec.kind, spec.line, spec.direction, spec.labels) == (
        "door", "line", LINE, "left_to_right", ("person",)
    )  # fmt: skip
    with pytest.raises(ConfigError, match="needs a zone"):
        RuleSpec("z", "zone")
    with pytest.raises(ConfigError, match="needs a line"):
        RuleSpec("l", "line")
    with pytest.raises(ConfigError, match="zone"):
        RuleSpec("z", "zone", zone=((0.1, 0.1), (0.9, 0.9), (0.9, 0.1), (0.1, 0.9)))
    with pytest.raises(ConfigError, match="HH:MM"):
        RuleSpec("p", schedule=("8:00", "17:00"))


def test_schedule_wraps_midnight() -> None:
    assert parse_hhmm("23:59") == 23 * 60 + 59

    def at(h: int, m: int) -> int:
        return 20 * DAY + (h * 60 + m) * 60_000

    night = ("22:00", "06:00")
    assert schedule_active(night, at(23, 0)) and schedule_active(night, at(5, 59))
    assert not schedule_active(night, at(6, 0)) and not schedule_active(night, at(12, 0))
    assert schedule_active(night, at(22, 0))
    assert schedule_active(("08:00", "17:00"), at(8, 0)) and not schedule_active(("08:00", "17:00"), at(17, 0))
    assert schedule_active(("00:00", "00:00"), at(3, 0))


def test_presence_once_per_track_above_min_score_and_state_dropped_at_end() -> None:
    spec = RuleSpec("p", min_score=0.5)
    hits = run(spec, [obs(0.2, score=0.3, t=0), obs(0.2, score=0.6, t=1), obs(0.2, t=2), obs(0.2, t=3, track=2)])
    assert [(h.track, h.ts_ms, h.incident_key) for h in hits] == [(1, 1, "p|cam-1|1"), (2, 3, "p|cam-1|2")]
    res = evaluate(spec, obs(0.2, t=4, etype="track_ended"), {"fired": True, "t": 3})
    assert res.hit is None and res.state is None


def test_camera_and_label_filters() -> None:
    spec = RuleSpec("p", labels=("car",), cameras=("cam-2",))
    assert run(spec, [obs(0.2, label="person", cam="cam-2"), obs(0.2, label="car", cam="cam-1")]) == []
    assert len(run(spec, [obs(0.2, label="car", cam="cam-2")])) == 1
    assert len(run(RuleSpec("any", labels=()), [obs(0.2, label="dog")])) == 1


def test_zone_entry_once_per_stay() -> None:
    spec = RuleSpec("z", "zone", zone=ZONE)
    xs = [0.2, 0.4, 0.6, 0.7, 0.8, 0.3, 0.6, 0.7]  # out, out, in, in, in, out, in, in
    hits = run(spec, [obs(x, t=i * 1000) for i, x in enumerate(xs)])
    assert [h.ts_ms for h in hits] == [2000, 6000]
    assert hits[0].since_ms == 2000 and hits[0].detail == "entered zone"


def test_zone_hit_waits_for_a_good_score_within_the_same_stay() -> None:
    spec = RuleSpec("z", "zone", zone=ZONE, min_score=0.5)
    hits = run(spec, [obs(0.6, t=0, score=0.2), obs(0.7, t=1000, score=0.8), obs(0.7, t=2000)])
    assert [(h.ts_ms, h.since_ms) for h in hits] == [(1000, 0)]


def test_dwell_fires_after_dwell_s_continuously_inside() -> None:
    spec = RuleSpec("d", "dwell", zone=ZONE, dwell_s=10)
    inside = [obs(0.7, t=t) for t in range(0, 15_001, 2500)]
    hits = run(spec, inside)
    assert [(h.ts_ms, h.since_ms) for h in hits] == [(10_000, 0)]
    # Leaving at 7.5 s resets the clock: 10 s more inside are needed.
    path = (
        [obs(0.7, t=t) for t in (0, 5000)] + [obs(0.2, t=7500)] + [obs(0.7, t=t) for t in range(10_000, 20_001, 2500)]
    )
    assert [(h.ts_ms, h.since_ms) for h in run(spec, path)] == [(20_000, 10_000)]


def test_line_crossing_fires_once_in_the_right_direction_only() -> None:
    ltr = RuleSpec("l", "line", line=LINE, direction="left_to_right")
    rtl = RuleSpec("l", "line", line=LINE, direction="right_to_left")
    anyway = RuleSpec("l", "line", line=LINE)
    # Walks from screen-right to screen-left: with the line drawn downwards that is left_to_right.
    walk = [obs(x, t=i * 200) for i, x in enumerate([0.9, 0.8, 0.7, 0.6, 0.55, 0.45, 0.4, 0.3, 0.2])]
    hits = run(ltr, walk)
    assert len(hits) == 1 and hits[0].ts_ms == 1000 and hits[0].detail == "crossed line left_to_right"
    assert run(rtl, walk) == []
    back_and_forth = [obs(x, t=i * 200) for i, x in enumerate([0.4, 0.6, 0.4, 0.6])]
    assert len(run(anyway, back_and_forth)) == 3
    assert [h.ts_ms for h in run(rtl, back_and_forth)] == [200, 600]


def test_line_needs_two_events_of_the_same_track() -> None:
    spec = RuleSpec("l", "line", line=LINE)
    assert run(spec, [obs(0.4, track=1), obs(0.6, track=2, t=200)]) == []


def test_count_fires_at_n_plus_one_distinct_tracks_within_the_window() -> None:
    spec = RuleSpec("c", "count", count=3, window_s=60)
    seq = [obs(0.2, track=k, t=k * 10_000) for k in range(1, 5)]  # 4 tracks within 40 s
    seq += [obs(0.2, track=1, t=45_000)]  # repeats do not add
    hits = run(spec, seq)
    assert [(h.track, h.incident_key) for h in hits] == [(4, "c|cam-1|zone")]
    assert "4 distinct person" in hits[0].detail


def test_count_does_not_fire_when_tracks_are_spread_beyond_the_window() -> None:
    spec = RuleSpec("c", "count", count=3, window_s=60)
    assert run(spec, [obs(0.2, track=k, t=k * 25_000) for k in range(1, 10)]) == []


def test_count_rearms_after_dropping_back() -> None:
    spec = RuleSpec("c", "count", count=1, window_s=10)
    seq = [obs(0.2, track=1, t=0), obs(0.2, track=2, t=1000), obs(0.2, track=3, t=2000)]
    seq += [obs(0.2, track=4, t=30_000), obs(0.2, track=5, t=31_000)]
    assert [h.ts_ms for h in run(spec, seq)] == [1000, 31_000]


def test_count_state_survives_track_end_and_respects_zone() -> None:
    spec = RuleSpec("c", "count", count=1, window_s=60, zone=ZONE)
    seq = [obs(0.7, track=1, etype="track_ended"), obs(0.2, track=2, t=10), obs(0.7, track=3, t=20)]
    assert [h.track for h in run(spec, seq)] == [3]


def test_schedule_gates_hits_but_not_state() -> None:
    spec = RuleSpec("z", "zone", zone=ZONE, schedule=("08:00", "09:00"))
    before, during = 20 * DAY + 7 * 3_600_000 + 59 * 60_000, 20 * DAY + 8 * 3_600_000
    hits = run(spec, [obs(0.7, t=before), obs(0.7, t=during)])
    assert [(h.ts_ms, h.since_ms) for h in hits] == [(during, before)]


def test_observation_from_event() -> None:
    ev = Event("e1", "s", "cam-1", 5, 1, "track_started", 3, "person", 0.7, (0.1, 0.1, 0.2, 0.3), "d@1")
    o = Observation.from_event(ev, 0.85)
    # the camera key: camera ids repeat across sites
    assert (o.cam, o.track, o.score, o.ts_ms, o.event_type, o.event_id) == (
        "s/cam-1",
        3,
        0.85,
        5,
        "track_started",
        "e1",
    )


SPECS = [
    RuleSpec("p", min_score=0.5),
    RuleSpec("z", "zone", zone=ZONE),
    RuleSpec("d", "dwell", zone=ZONE, dwell_s=2),
    RuleSpec("l", "line", line=LINE),
    RuleSpec("c", "count", count=2, window_s=5),
]
steps = st.lists(
    st.tuples(st.integers(1, 4), st.floats(0.05, 0.95), st.floats(0.3, 1.0), st.integers(0, 3000), st.booleans()),
    max_size=40,
)


@given(steps)
@settings(max_examples=60, deadline=None)
def test_state_is_json_and_storing_it_as_json_changes_nothing(seq: list[tuple[int, float, float, int, bool]]) -> None:
    t = 0
    observations = []
    for track, x, y, dt, ended in seq:
        t += dt
        observations.append(obs(x, y, t=t, track=track, etype="track_ended" if ended else "track_updated"))
    for spec in SPECS:
        direct = run(spec, observations)
        assert run(spec, observations, via_json=True) == direct
        for h in direct:
            assert h.incident_key == state_key(spec, h.cam, h.track)


def test_feet_flickering_on_a_line_count_no_crossing_with_hysteresis() -> None:
    spec = RuleSpec("l", "line", line=LINE, hysteresis=0.02)
    # someone standing on the line: their feet jitter +-1 % of the frame around it
    flicker = [obs(x, t=i * 200) for i, x in enumerate([0.49, 0.51, 0.495, 0.505, 0.49, 0.51, 0.5, 0.49])]
    assert run(spec, flicker) == []
    # without the band (the old behaviour) each side change counted
    assert len(run(RuleSpec("l", "line", line=LINE, hysteresis=0.0), flicker)) >= 5
    # arriving from clearly one side, dithering on the line, then leaving on the other: one crossing
    real = [obs(x, t=i * 200) for i, x in enumerate([0.6, 0.51, 0.49, 0.51, 0.49, 0.45, 0.4])]
    hits = run(spec, real)
    assert len(hits) == 1 and hits[0].ts_ms == 1000
    # and coming back over it counts again: a track that crosses twice counts 2
    assert len(run(spec, [*real, obs(0.45, t=1600), obs(0.55, t=1800)])) == 2


def test_walking_around_the_end_of_a_line_is_no_crossing() -> None:
    short = ((0.5, 0.0), (0.5, 0.5))  # ends half-way down
    spec = RuleSpec("l", "line", line=short)
    assert run(spec, [obs(0.4, t=0), obs(0.6, t=200)]) == []  # feet at y=0.8, below its end


def test_line_state_written_before_hysteresis_still_counts() -> None:
    spec = RuleSpec("l", "line", line=LINE)
    res = evaluate(spec, obs(0.4, t=200), {"prev": [0.6, 0.8], "t": 0})
    assert res.hit is not None and res.state is not None and res.state["side"] is not None


def test_feet_jittering_on_a_zone_edge_make_one_stay() -> None:
    spec = RuleSpec("z", "zone", zone=ZONE, hysteresis=0.02, cooldown_s=0)  # left edge at x = 0.5
    jitter = [obs(x, t=i * 200) for i, x in enumerate([0.4, 0.51, 0.49, 0.515, 0.495, 0.52, 0.6, 0.7])]
    assert len(run(spec, jitter)) == 1
    assert len(run(RuleSpec("z", "zone", zone=ZONE, hysteresis=0.0, cooldown_s=0), jitter)) == 3


def test_a_track_first_seen_on_a_line_takes_the_side_it_is_on() -> None:
    spec = RuleSpec("l", "line", line=LINE, hysteresis=0.02)
    # walks into view with its feet 0.5 % right of the line, then clearly left: one crossing
    hits = run(spec, [obs(x, t=i * 200) for i, x in enumerate([0.505, 0.49, 0.47, 0.45])])
    assert len(hits) == 1 and hits[0].ts_ms == 400
    # first seen on the line and dithering there: still nothing
    assert run(spec, [obs(x, t=i * 200) for i, x in enumerate([0.505, 0.49, 0.51, 0.495, 0.505])]) == []


def test_a_track_first_seen_just_inside_a_zone_edge_is_inside() -> None:
    spec = RuleSpec("z", "zone", zone=ZONE, hysteresis=0.02, cooldown_s=0)  # left edge at x = 0.5
    hits = run(spec, [obs(x, t=i * 200) for i, x in enumerate([0.51, 0.505, 0.515, 0.6])])
    assert len(hits) == 1 and hits[0].ts_ms == 0


def test_a_dwell_with_no_event_after_the_dwell_time_fires_at_the_exit() -> None:
    spec = RuleSpec("d", "dwell", zone=ZONE, dwell_s=5.0, hysteresis=0.0, cooldown_s=0)  # left edge x = 0.5
    # in at 0 s, one event at 3 s, out at 5.4 s: no event inside after 5 s, but the stay was 5.4 s
    hits = run(spec, [obs(0.6, t=0), obs(0.7, t=3000), obs(0.4, t=5400)])
    assert len(hits) == 1 and (hits[0].since_ms, hits[0].ts_ms) == (0, 5400) and "5.4 s" in hits[0].detail
    # out at 4.8 s: too short
    assert run(spec, [obs(0.6, t=0), obs(0.7, t=3000), obs(0.4, t=4800)]) == []
    # fired inside already: nothing more at the exit
    assert len(run(spec, [obs(0.6, t=0), obs(0.7, t=5200), obs(0.4, t=6000)])) == 1
