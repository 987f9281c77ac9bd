from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.operators.geometry import on_border
from pipeline.operators.track_events import Emission, TrackEventPolicy, better_view
from pipeline.operators.tracking import Detection, Track, Tracker, TrackUpdate
from pipeline.testing import scripted_track

pytestmark = pytest.mark.unit


def track(tid: int = 1, cx: float = 0.5, score: float = 0.8, label: str = "person", t: int = 0) -> Track:
    return Track(tid, label, score, (cx - 0.05, 0.4, cx + 0.05, 0.7), 0, t, 3, 0)


def types(decisions: Sequence[Emission]) -> list[str]:
    return [d[0] for d in decisions]


def test_steady_walker_for_10_s_at_5_fps_makes_a_handful_of_events() -> None:
    # 0.02 frame widths per second: a person walking across a wide view, far away.
    path = scripted_track((0.3, 0.5), (0.02, 0.0), frames=50, jitter=0.003, seed=1)
    tracker, policy = Tracker(), TrackEventPolicy()
    emitted: list[str] = []
    for t, box in path:
        emitted += types(policy.decide(tracker.update([Detection(box, 0.8, "person")], t), t))
    end_t = path[-1][0]
    for k in range(1, 8):  # walks out of view: misses until the tracker ends it
        emitted += types(policy.decide(tracker.update([], end_t + 200 * k), end_t + 200 * k))
    assert emitted[0] == "track_started" and emitted[-1] == "track_ended"
    assert emitted.count("track_started") == 1 and emitted.count("track_ended") == 1
    assert 3 <= len(emitted) <= 8, emitted


def test_fast_mover_is_bounded_by_distance_over_threshold() -> None:
    policy = TrackEventPolicy(move_threshold=0.05)
    out = policy.decide(TrackUpdate(started=[track(cx=0.1)]), 0)
    for i in range(1, 41):  # 0.02 per step, 0.8 in all
        out += policy.decide(TrackUpdate(updated=[track(cx=0.1 + 0.02 * i, t=200 * i)]), 200 * i)
    n_updates = types(out).count("track_updated")
    assert 0.8 / 0.06 - 1 <= n_updates <= 0.8 / 0.05 + 1


def test_update_reasons() -> None:
    policy = TrackEventPolicy(move_threshold=0.05, score_delta=0.15, keepalive_ms=5000)
    assert types(policy.decide(TrackUpdate(started=[track()]), 0)) == ["track_started"]
    # Small move, small score change, soon: nothing.
    assert policy.decide(TrackUpdate(updated=[track(cx=0.53, score=0.9)]), 1000) == []
    # Score jump.
    assert types(policy.decide(TrackUpdate(updated=[track(score=0.5)]), 1200)) == ["track_updated"]
    # Label change.
    assert types(policy.decide(TrackUpdate(updated=[track(score=0.5, label="car")]), 1400)) == ["track_updated"]
    # Keepalive: nothing changed, 5 s since the last emitted event.
    assert policy.decide(TrackUpdate(updated=[track(score=0.5, label="car")]), 6300) == []
    assert types(policy.decide(TrackUpdate(updated=[track(score=0.5, label="car")]), 6400)) == ["track_updated"]


def test_movement_is_measured_from_the_last_emitted_event_not_the_last_frame() -> None:
    policy = TrackEventPolicy(move_threshold=0.05)
    policy.decide(TrackUpdate(started=[track(cx=0.5)]), 0)
    out = []
    for i in range(1, 6):  # 0.012 per step: each step is tiny, the sum is not
        out += policy.decide(TrackUpdate(updated=[track(cx=0.5 + 0.012 * i)]), 100 * i)
    assert types(out) == ["track_updated"]


def test_held_tracks_only_get_keepalives() -> None:
    policy = TrackEventPolicy(keepalive_ms=5000)
    policy.decide(TrackUpdate(started=[track()]), 0)
    assert policy.decide(TrackUpdate(held=[track(cx=0.9)]), 4000) == []
    assert types(policy.decide(TrackUpdate(held=[track()]), 5000)) == ["track_updated"]


def test_unknown_tracks_are_announced_and_unannounced_ends_are_silent() -> None:
    policy = TrackEventPolicy()
    assert types(policy.decide(TrackUpdate(updated=[track(7)]), 0)) == ["track_started"]
    assert policy.decide(TrackUpdate(ended=[track(8)]), 100) == []
    assert types(policy.decide(TrackUpdate(ended=[track(7)]), 100)) == ["track_ended"]
    assert len(policy) == 0


def test_state_is_bounded() -> None:
    policy = TrackEventPolicy(max_tracks=3)
    policy.decide(TrackUpdate(started=[track(i) for i in range(5)]), 0)
    assert len(policy) == 3 and policy.evicted == 2


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.integers(0, 3000)), max_size=60))
def test_every_started_track_ends_once_and_updates_only_between(steps: list[tuple[float, float, int]]) -> None:
    policy = TrackEventPolicy()
    t = 0
    out = policy.decide(TrackUpdate(started=[track()]), t)
    for cx, score, dt in steps:
        t += dt
        base = track(cx=cx, score=score, t=t)
        out += policy.decide(TrackUpdate(updated=[base]), t)
    out += policy.decide(TrackUpdate(ended=[dataclasses.replace(track(), missed=6)]), t + 1)
    kinds = types(out)
    assert kinds[0] == "track_started" and kinds[-1] == "track_ended"
    assert set(kinds[1:-1]) <= {"track_updated"}
    assert len(kinds) <= len(steps) + 2


def test_a_side_change_of_a_configured_line_is_sent_at_once() -> None:
    line = ((0.5, 0.0), (0.5, 1.0))
    with_line = TrackEventPolicy(move_threshold=0.05, lines=[line], line_margin=0.01)
    without = TrackEventPolicy(move_threshold=0.05)
    # small steps (0.015 a frame, below move_threshold) across the line
    xs = [0.47, 0.485, 0.50, 0.515, 0.53]
    got, base = [], []
    for i, x in enumerate(xs):
        up = TrackUpdate(started=[track(cx=x)]) if i == 0 else TrackUpdate(updated=[track(cx=x)])
        got.append(types(with_line.decide(up, i * 200)))
        base.append(types(without.decide(up, i * 200)))
    assert got[0] == base[0] == ["track_started"]
    # the step whose feet are clearly right of the line (0.515 >= 0.5 + margin) is sent
    assert got[1:] == [[], [], ["track_updated"], []]
    assert base[1:] == [[], [], [], ["track_updated"]], "without the line, only the 0.06 move is"


def crops(decisions: Sequence[Emission]) -> list[tuple[str, bool]]:
    return [(d.type, d.crop) for d in decisions]


def test_a_track_that_walks_in_at_the_border_gets_one_better_crop_once_fully_inside() -> None:
    policy = TrackEventPolicy(move_threshold=0.5, keepalive_ms=60_000)  # only crops make events here
    assert crops(policy.decide(TrackUpdate(started=[track(cx=0.03)]), 0)) == [("track_started", True)]
    # still cut off by the left border (x1 = 0.0): no new crop
    assert policy.decide(TrackUpdate(updated=[track(cx=0.05)]), 200) == []
    # the whole box is in view: one update with a crop, then none while the view stays alike
    assert crops(policy.decide(TrackUpdate(updated=[track(cx=0.08)]), 400)) == [("track_updated", True)]
    assert policy.decide(TrackUpdate(updated=[track(cx=0.12)]), 600) == []


def test_a_track_first_seen_whole_gets_no_second_crop_until_it_doubles() -> None:
    policy = TrackEventPolicy(move_threshold=0.5, keepalive_ms=60_000)
    policy.decide(TrackUpdate(started=[track(cx=0.5)]), 0)
    assert policy.decide(TrackUpdate(updated=[track(cx=0.52)]), 200) == []
    bigger = dataclasses.replace(track(cx=0.5), box=(0.4, 0.3, 0.6, 0.75))  # 3x the area: came closer
    assert crops(policy.decide(TrackUpdate(updated=[bigger]), 400)) == [("track_updated", True)]


def test_better_crops_are_bounded_per_track_and_never_from_a_weak_or_predicted_box() -> None:
    policy = TrackEventPolicy(move_threshold=0.5, keepalive_ms=60_000, crop_refreshes=1, score_delta=0.15)
    policy.decide(TrackUpdate(started=[track(cx=0.5)]), 0)
    doubled = dataclasses.replace(track(cx=0.5), box=(0.4, 0.3, 0.6, 0.75))
    assert policy.decide(TrackUpdate(held=[doubled]), 200) == []  # predicted box: not a new picture
    weak = dataclasses.replace(doubled, score=0.6)  # 0.8 -> 0.6: the detector is less sure
    assert crops(policy.decide(TrackUpdate(updated=[weak]), 400)) == [("track_updated", False)]  # score moved
    assert crops(policy.decide(TrackUpdate(updated=[doubled]), 600)) == [("track_updated", True)]
    quadrupled = dataclasses.replace(doubled, box=(0.3, 0.1, 0.7, 0.95))
    assert policy.decide(TrackUpdate(updated=[quadrupled]), 800) == []  # crop_refreshes=1 used up


def test_on_border_and_better_view() -> None:
    assert on_border((0.0, 0.2, 0.1, 0.5), 0.01) and on_border((0.5, 0.2, 0.6, 0.995), 0.01)
    assert not on_border((0.02, 0.02, 0.98, 0.98), 0.01)
    inside = (0.4, 0.4, 0.5, 0.6)
    assert better_view((0.0, 0.4, 0.05, 0.6), 0.8, inside, 0.8, 0.01, 0.15)
    assert not better_view(inside, 0.8, (0.0, 0.3, 0.3, 0.9), 0.9, 0.01, 0.15), "cut off is never better"
    assert not better_view(inside, 0.8, (0.38, 0.38, 0.52, 0.62), 0.8, 0.01, 0.15), "1.7x the area is not enough"


def test_entering_and_leaving_a_configured_zone_is_sent_at_once() -> None:
    zone = ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0))  # the right half; feet at y = 0.7
    policy = TrackEventPolicy(move_threshold=0.5, keepalive_ms=60_000, zones=[zone], line_margin=0.01)
    xs = [0.45, 0.495, 0.505, 0.52, 0.56, 0.505, 0.495, 0.48]
    got = [types(policy.decide(TrackUpdate(started=[track(cx=xs[0])]), 0))]
    got += [types(policy.decide(TrackUpdate(updated=[track(cx=x)]), i * 200)) for i, x in enumerate(xs[1:], 1)]
    # in at 0.52 (>= 0.01 inside the edge), out at 0.48; the band (0.49-0.51) changes nothing
    assert got == [["track_started"], [], [], ["track_updated"], [], [], [], ["track_updated"]]
