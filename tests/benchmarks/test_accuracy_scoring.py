"""The accuracy benchmark's scoring glue on synthetic data whose answer is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.accuracy import run
from benchmarks.accuracy.counting import count_crossings, rule_hits_on_tracks, zone_stays
from benchmarks.accuracy.data import DataMissing, load_ground_truth
from benchmarks.accuracy.detection_metrics import score_detections
from benchmarks.accuracy.mot_scoring import score_tracks
from benchmarks.harness import Context

pytestmark = pytest.mark.unit


def walk(gid_x: float, frames: range) -> dict[int, tuple[float, float, float, float]]:
    """A person walking right 3 px per frame."""
    return {f: (gid_x + 3 * f, 100.0, gid_x + 3 * f + 40, 200.0) for f in frames}


def scene(frames: range) -> dict[int, list[tuple[int, tuple[float, float, float, float]]]]:
    a, b = walk(0, frames), walk(300, frames)
    return {f: [(1, a[f]), (2, b[f])] for f in frames}


def test_perfect_tracker_scores_100_percent() -> None:
    gt = scene(range(30))
    s = score_tracks(gt, gt, list(range(30)))
    assert s.mota == pytest.approx(1.0)
    assert s.idf1 == pytest.approx(1.0)
    assert (s.id_switches, s.fragmentations, s.misses, s.false_positives) == (0, 0, 0, 0)
    assert s.mostly_tracked == 2


def test_one_swapped_id_is_exactly_one_switch() -> None:
    gt = scene(range(30))
    tracks = {f: [(1 if f < 15 else 9, gt[f][0][1]), (2, gt[f][1][1])] for f in range(30)}
    s = score_tracks(tracks, gt, list(range(30)))
    assert s.id_switches == 1
    assert s.mota == pytest.approx(1 - 1 / 60)
    assert s.idf1 < 1.0
    # the timeline shows person 1 as track 1 then track 9
    assert [t for _, t in s.timeline[1]] == [1] * 15 + [9] * 15


def test_missed_frames_count_as_misses_and_a_fragmentation() -> None:
    gt = scene(range(30))
    tracks = {f: [r for r in gt[f] if not (r[0] == 1 and 10 <= f < 13)] for f in range(30)}
    s = score_tracks(tracks, gt, list(range(30)))
    assert s.misses == 3
    assert s.fragmentations == 1
    assert s.id_switches == 0


def test_a_track_that_crosses_a_line_twice_counts_two() -> None:
    line = ((0.5, 0.0), (0.5, 1.0))
    path = [(0.4, 0.5), (0.45, 0.5), (0.55, 0.5), (0.6, 0.5), (0.52, 0.5), (0.48, 0.5)]
    c = count_crossings(path, line)
    assert c["left_to_right"] + c["right_to_left"] == 2
    assert c["left_to_right"] == c["right_to_left"] == 1
    # passing beyond the segment's end is no crossing
    assert sum(count_crossings([(0.4, 1.5), (0.6, 1.5)], line).values()) == 0


def test_zone_entries_and_dwell() -> None:
    zone = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))
    inside, outside = (0.5, 0.5), (1.5, 0.5)
    samples = [(0.0, inside), (3.0, inside), (4.0, outside), (5.0, inside), (11.0, inside)]
    s = zone_stays(samples, zone, dwell_s=5.0)
    assert (s.entries, s.dwells, s.durations) == (2, 1, (3.0, 6.0))


def feet_at(points: list[tuple[float, float]]) -> list[tuple[int, tuple[float, float, float, float]]]:
    """A GT track (frame, pixel box) whose feet (bottom-centre) walk ``points`` (normalised)."""
    return [(i, (x * 768 - 10, y * 576 - 60, x * 768 + 10, y * 576)) for i, (x, y) in enumerate(points)]


def test_gt_figures_are_the_products_rules_on_perfect_tracks() -> None:
    line = {"id": "l", "kind": "line", "line": [[0.5, 0.0], [0.5, 1.0]], "cooldown_s": 0}
    zone = [[0.0, 0.0], [0.3, 0.0], [0.3, 1.0], [0.0, 1.0]]
    dwell = {"id": "d", "kind": "dwell", "zone": zone, "dwell_s": 5.0, "cooldown_s": 0}
    across_twice = feet_at([(0.4, 0.5), (0.45, 0.5), (0.55, 0.5), (0.6, 0.5), (0.52, 0.5), (0.45, 0.5)])
    # feet flickering 1 % around the line: the rule's hysteresis band counts no crossing
    flicker = feet_at([(0.49, 0.5), (0.51, 0.5), (0.49, 0.5), (0.51, 0.5)])
    # in the zone from frame 0 to 44 (4.4 s; out at 4.5 s) and from 55 to 105 (5.0 s): one dwell.
    # (A stay within one frame of dwell_s is a coin toss between measures: the rule, judging at
    # the exit, counts first-out minus first-in; the GT stays count last-in minus first-in.)
    stays = feet_at([(0.1, 0.5)] * 45 + [(0.5, 0.5)] * 10 + [(0.1, 0.5)] * 51)
    hits = rule_hits_on_tracks([line, dwell], {1: across_twice, 2: flicker, 3: stays})
    assert hits == {"l": 2, "d": 1}


def test_detection_ap_perfect_and_with_a_false_positive_ranked_first() -> None:
    gt = {0: [(0.0, 0.0, 10.0, 10.0)], 1: [(20.0, 20.0, 30.0, 30.0)]}
    perfect = {0: [((0.0, 0.0, 10.0, 10.0), 0.9)], 1: [((20.0, 20.0, 30.0, 30.0), 0.8)]}
    s = score_detections(perfect, gt, min_score=0.5)
    assert s.ap50 == pytest.approx(1.0)
    assert (s.precision, s.recall, s.tp, s.fp) == (1.0, 1.0, 2, 0)
    with_fp = {0: [((0.0, 0.0, 10.0, 10.0), 0.9), ((50.0, 50.0, 60.0, 60.0), 0.95)], 1: perfect[1]}
    s2 = score_detections(with_fp, gt, min_score=0.85)
    # ranked: FP (0.95), TP (0.9), TP (0.8): precision envelope 2/3 from recall 0 to 1
    assert s2.ap50 == pytest.approx(2 / 3)
    assert (s2.tp, s2.fp) == (1, 1)
    assert s2.recall == pytest.approx(0.5)
    # a duplicate of a claimed box is a false positive, not a second hit
    dup = {0: [((0.0, 0.0, 10.0, 10.0), 0.9), ((0.0, 0.0, 10.0, 11.0), 0.85)], 1: []}
    assert score_detections(dup, gt, min_score=0.0).fp == 1


def test_ground_truth_parsing_and_alignment(tmp_path: Path) -> None:
    f = tmp_path / "gt.txt"
    f.write_text("1,3,10,20,30,40,1,-1,-1,-1\n2,3,12,20,30,40,1,-1,-1,-1\n2,4,0,0,5,5,0,-1,-1,-1\n")
    gt = load_ground_truth(f)
    assert gt.at(0) == [(3, (10.0, 20.0, 40.0, 60.0))]  # GT frame 1 is video frame index 0
    assert gt.at(1) == [(3, (12.0, 20.0, 42.0, 60.0))]  # conf 0 rows are not evaluated
    assert gt.ids == {3}


def test_missing_ground_truth_skips_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataMissing, match="ground truth not found"):
        load_ground_truth(missing)
    ctx = Context(quick=True, out_dir=tmp_path, work_dir=tmp_path, print_fn=lambda s: None, options={"gt": missing})
    result = run(ctx)
    assert len(result.rows) == 1
    assert result.rows[0].value is None
    assert "ground truth not found" in result.rows[0].note
