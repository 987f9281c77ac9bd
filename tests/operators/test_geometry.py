from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.operators.geometry import (
    anchor_point,
    crossing,
    point_in_polygon,
    polygon_problem,
    side_of,
    validate_polygon,
    validate_segment,
)

pytestmark = pytest.mark.unit

SQUARE = [(0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)]
HORIZONTAL = ((0.0, 0.5), (1.0, 0.5))  # drawn left to right across the middle


def test_anchor_is_bottom_centre_by_default() -> None:
    assert anchor_point((0.1, 0.2, 0.3, 0.8)) == pytest.approx((0.2, 0.8))
    assert anchor_point((0.1, 0.2, 0.3, 0.8), "centre") == pytest.approx((0.2, 0.5))


def test_point_in_polygon_square_and_concave() -> None:
    assert point_in_polygon((0.4, 0.4), SQUARE)
    assert not point_in_polygon((0.7, 0.4), SQUARE)
    assert not point_in_polygon((0.4, 0.1), SQUARE)
    # An L shape: the notch at the top right is outside.
    ell = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]
    assert point_in_polygon((0.25, 0.25), ell)
    assert not point_in_polygon((0.75, 0.25), ell)
    assert point_in_polygon((0.75, 0.75), ell)


@given(st.floats(0, 1), st.floats(0, 1))
def test_point_in_axis_aligned_rectangle_matches_bounds(x: float, y: float) -> None:
    expected = 0.2 < x < 0.6 and 0.2 < y < 0.6
    boundary = x in (0.2, 0.6) or y in (0.2, 0.6)
    if not boundary:
        assert point_in_polygon((x, y), SQUARE) == expected


def test_sides_follow_the_documented_convention() -> None:
    # Horizontal line drawn left to right: the upper half of the image is its left side.
    assert side_of(HORIZONTAL, (0.5, 0.2)) == -1
    assert side_of(HORIZONTAL, (0.5, 0.8)) == 1
    # Vertical line drawn bottom to top: screen-left is its left side.
    up = ((0.5, 1.0), (0.5, 0.0))
    assert side_of(up, (0.2, 0.5)) == -1
    assert crossing(up, (0.2, 0.5), (0.8, 0.5)) == "left_to_right"


def test_crossing_direction_and_reversal() -> None:
    assert crossing(HORIZONTAL, (0.5, 0.4), (0.5, 0.6)) == "left_to_right"  # moving down
    assert crossing(HORIZONTAL, (0.5, 0.6), (0.5, 0.4)) == "right_to_left"
    reversed_line = (HORIZONTAL[1], HORIZONTAL[0])
    assert crossing(reversed_line, (0.5, 0.4), (0.5, 0.6)) == "right_to_left"


def test_no_crossing_without_changing_side_or_outside_the_segment() -> None:
    assert crossing(HORIZONTAL, (0.1, 0.4), (0.9, 0.45)) is None
    short = ((0.4, 0.5), (0.6, 0.5))
    assert crossing(short, (0.1, 0.4), (0.1, 0.6)) is None  # crosses the extension only
    assert crossing(short, (0.5, 0.4), (0.5, 0.6)) == "left_to_right"


def test_stopping_on_the_line_counts_once() -> None:
    path = [(0.5, 0.4), (0.5, 0.5), (0.5, 0.6)]  # lands exactly on the line, then continues
    hits = [crossing(HORIZONTAL, a, b) for a, b in itertools.pairwise(path)]
    assert [h for h in hits if h] == ["left_to_right"]


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=2, max_size=30))
def test_crossings_alternate_and_net_to_the_side_change(path: list[tuple[float, float]]) -> None:
    # A path can never cross the same way twice in a row: each crossing flips the side.
    line = ((0.0, 0.5), (1.0, 0.5))  # spans the frame, so every side change is a crossing
    hits = [d for a, b in itertools.pairwise(path) if (d := crossing(line, a, b))]
    for first, second in itertools.pairwise(hits):
        assert first != second
    changed = side_of(line, path[0]) != side_of(line, path[-1])
    assert (len(hits) % 2 == 1) == changed


def test_polygon_validation() -> None:
    assert polygon_problem(SQUARE) is None
    assert validate_polygon(SQUARE) == tuple(SQUARE)
    assert "at least 3" in (polygon_problem([(0, 0), (1, 1)]) or "")
    assert "outside" in (polygon_problem([(0, 0), (1.5, 0), (1, 1)]) or "")
    assert "zero area" in (polygon_problem([(0, 0), (0.5, 0.5), (1, 1)]) or "")
    bow_tie = [(0.1, 0.1), (0.9, 0.9), (0.9, 0.1), (0.1, 0.9)]
    assert "intersect" in (polygon_problem(bow_tie) or "")
    with pytest.raises(ValueError, match="intersect"):
        validate_polygon(bow_tie)


def test_segment_validation() -> None:
    assert validate_segment([(0, 0.5), (1, 0.5)]) == ((0.0, 0.5), (1.0, 0.5))
    with pytest.raises(ValueError):
        validate_segment([(0.5, 0.5), (0.5, 0.5)])
    with pytest.raises(ValueError):
        validate_segment([(0, 0), (2, 0)])
