from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.operators.schema import Box
from pipeline.operators.tracking import Detection, Tracker, TrackUpdate, iou
from pipeline.testing import scripted_track

pytestmark = pytest.mark.unit


def person(box: Box, score: float = 0.8) -> Detection:
    return Detection(box, score, "person")


def run(tracker: Tracker, frames: list[tuple[int, list[Detection]]]) -> list[TrackUpdate]:
    return [tracker.update(dets, t) for t, dets in frames]


def test_iou() -> None:
    assert iou((0, 0, 1, 1), (0, 0, 1, 1)) == pytest.approx(1.0)
    assert iou((0, 0, 0.5, 1), (0.5, 0, 1, 1)) == 0.0
    assert iou((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)) == pytest.approx(1 / 7)


def test_confirmed_after_min_hits_and_started_once() -> None:
    tr = Tracker(min_hits=3)
    box = (0.4, 0.4, 0.5, 0.7)
    ups = run(tr, [(i * 200, [person(box)]) for i in range(5)])
    assert [len(u.started) for u in ups] == [0, 0, 1, 0, 0]
    assert [len(u.updated) for u in ups] == [0, 0, 0, 1, 1]
    started = ups[2].started[0]
    assert (started.hits, started.first_ms, started.last_ms) == (3, 0, 400)
    assert tr.tracks[0].id == started.id


@pytest.mark.parametrize("seed", range(5))
def test_same_id_for_a_person_walking_across_50_jittered_frames(seed: int) -> None:
    path = scripted_track((0.05, 0.5), (0.09, 0.0), frames=50, jitter=0.01, seed=seed)
    tr = Tracker()
    ups = run(tr, [(t, [person(b)]) for t, b in path])
    ids = {t.id for u in ups for t in u.started + u.updated}
    assert len(ids) == 1
    assert sum(len(u.started) for u in ups) == 1
    assert sum(len(u.updated) for u in ups) == 48  # every frame after confirmation
    final = tr.tracks[0]
    # The filter has learnt the motion: ~0.09 frame widths per second to the right.
    assert final.velocity[0] == pytest.approx(0.09, abs=0.04)
    last = path[-1][1]
    assert final.centre[0] == pytest.approx((last[0] + last[2]) / 2, abs=0.02)


@pytest.mark.parametrize("seed", range(5))
def test_two_crossing_people_keep_their_ids(seed: int) -> None:
    a = scripted_track((0.1, 0.50), (0.16, 0.0), frames=25, jitter=0.005, seed=seed)
    b = scripted_track((0.9, 0.53), (-0.16, 0.0), frames=25, jitter=0.005, seed=seed + 100)
    tr = Tracker()
    owner: dict[int, str] = {}
    for (t, box_a), (_, box_b) in zip(a, b, strict=True):
        up = tr.update([person(box_a), person(box_b)], t)
        for track in up.started + up.updated:
            # Whoever the track is, its estimate must stay with the same walker.
            who = (
                "a"
                if abs(track.centre[0] - (box_a[0] + box_a[2]) / 2) < abs(track.centre[0] - (box_b[0] + box_b[2]) / 2)
                else "b"
            )
            if abs((box_a[0] + box_a[2]) / 2 - (box_b[0] + box_b[2]) / 2) < 0.05:
                continue  # too close to tell apart: skip the frames where they overlap
            assert owner.setdefault(track.id, who) == who
    assert len(owner) == 2
    assert not tr.dropped_detections


def test_labels_never_match_across_classes() -> None:
    tr = Tracker(min_hits=1)
    box = (0.4, 0.4, 0.5, 0.7)
    up1 = tr.update([person(box)], 0)
    up2 = tr.update([Detection(box, 0.9, "car")], 200)
    assert up2.started and up2.started[0].label == "car"
    assert up2.started[0].id != up1.started[0].id
    assert not up2.updated


def test_short_gap_keeps_the_track_and_the_prediction_bridges_it() -> None:
    # After the gap the object is 1.5 box widths from where it was last seen (IoU 0), so
    # only the velocity prediction can re-associate it.
    path = scripted_track((0.1, 0.5), (0.15, 0.0), size=(0.1, 0.2), frames=20)
    tr = Tracker(max_missed=5)
    gap = range(8, 12)  # 4 missed frames < max_missed
    ids: set[int] = set()
    for i, (t, box) in enumerate(path):
        up = tr.update([] if i in gap else [person(box)], t)
        assert not up.ended
        ids |= {x.id for x in up.started + up.updated}
        if i in gap:
            assert tr.tracks[0].missed == i - gap.start + 1
    assert len(ids) == 1
    assert tr.tracks[0].missed == 0


def test_track_ends_after_more_than_max_missed_and_ids_are_not_reused() -> None:
    tr = Tracker(max_missed=2, min_hits=1)
    box = (0.4, 0.4, 0.5, 0.7)
    first = tr.update([person(box)], 0).started[0]
    ups = run(tr, [(200, []), (400, []), (600, [])])
    assert [len(u.ended) for u in ups] == [0, 0, 1]
    ended = ups[2].ended[0]
    assert ended.id == first.id and ended.missed == 3 and ended.last_ms == 0
    assert ended.box == pytest.approx(box)  # last matched box, not a drifting prediction
    again = tr.update([person(box)], 800).started[0]
    assert again.id > first.id


def test_tentative_track_dropped_silently_on_a_miss() -> None:
    tr = Tracker(min_hits=2)
    box = (0.4, 0.4, 0.5, 0.7)
    ups = run(tr, [(0, [person(box)]), (200, []), (400, [person(box)]), (600, [person(box)])])
    assert not any(u.ended for u in ups)
    assert len(ups[3].started) == 1


def test_predict_only_holds_tracks_without_missing() -> None:
    tr = Tracker(max_missed=1, min_hits=1)
    path = scripted_track((0.3, 0.5), (0.2, 0.0), frames=5)
    for t, box in path:
        tr.update([person(box)], t)
    before = tr.tracks[0]
    for k in range(1, 30):  # 6 s without detections: the motion gate says nothing moved
        up = tr.predict_only(path[-1][0] + k * 200)
        assert [x.id for x in up.held] == [before.id] and not up.ended
    held = tr.tracks[0]
    assert held.missed == 0
    assert held.box == pytest.approx(before.box, abs=0.02)  # held in place, no drift
    assert held.velocity == (0.0, 0.0)


def test_end_all_and_bounded_track_count() -> None:
    tr = Tracker(min_hits=1, max_tracks=3)
    dets = [person((0.1 * i, 0.1, 0.1 * i + 0.05, 0.2)) for i in range(5)]
    up = tr.update(dets, 0)
    assert len(up.started) == 3 and tr.dropped_detections == 2
    assert len(tr.end_all(100).ended) == 3 and tr.tracks == []


def test_first_id_and_next_id() -> None:
    tr = Tracker(min_hits=1, first_id=1000)
    assert tr.update([person((0.1, 0.1, 0.2, 0.3))], 0).started[0].id == 1000
    assert tr.next_id == 1001


@given(
    st.lists(
        st.lists(
            st.tuples(st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.01, 0.1), st.sampled_from(["person", "car"])),
            max_size=6,
        ),
        max_size=15,
    )
)
@settings(max_examples=100, deadline=None)
def test_invariants_on_arbitrary_detection_streams(frames: list[list[tuple[float, float, float, str]]]) -> None:
    tr = Tracker(max_missed=2, min_hits=2)
    live: set[int] = set()
    seen: set[int] = set()
    for i, frame in enumerate(frames):
        dets = [Detection((x, y, x + s, y + s), 0.7, label) for x, y, s, label in frame]
        up = tr.update(dets, i * 200)
        lists = [t.id for t in up.started + up.updated + up.ended]
        assert len(lists) == len(set(lists))  # a track appears in one list per step
        for t in up.started:
            assert t.id not in seen  # ids are never reused
            seen.add(t.id)
            live.add(t.id)
        assert {t.id for t in up.updated} <= live
        assert {t.id for t in up.ended} <= live
        live -= {t.id for t in up.ended}
        assert len(up.started) + len(up.updated) <= len(dets)
        for t in up.started + up.updated + up.ended:
            x1, y1, x2, y2 = t.box
            assert 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1
        assert {t.id for t in tr.tracks} == live
