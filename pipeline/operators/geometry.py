"""Zones and lines in normalised image coordinates.

Coordinates are fractions of the frame: ``x`` grows to the right and ``y`` grows *downwards*
(image convention, the same space as event boxes). Every function here is pure.

Line sides and crossing direction
---------------------------------
A line is drawn from ``a`` to ``b``. Stand on ``a`` and look towards ``b``: the *left* and *right*
sides are your left and right hands **on the image as displayed** (y down). Concretely, for
``s = cross(b - a, p - a)``, ``s > 0`` is the right side and ``s < 0`` the left side.

Examples (so a person configuring a rule can check themselves):

* ``a=(0, 0.5) -> b=(1, 0.5)`` (drawn left to right across the middle): the left side is the
  upper half of the image, so ``left_to_right`` means moving *down* the image.
* ``a=(0.5, 1) -> b=(0.5, 0)`` (drawn bottom to top): the left side is the left half of the
  image, so ``left_to_right`` means moving to the right on screen.

Reverse the line's points to reverse the meaning of the directions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal

from pipeline.operators.schema import Box

Point = tuple[float, float]
Segment = tuple[Point, Point]
Direction = Literal["left_to_right", "right_to_left"]
Anchor = Literal["bottom_centre", "centre", "top_centre"]

_EPS: Final = 1e-12


def anchor_point(box: Box, where: Anchor = "bottom_centre") -> Point:
    """The point of a box that represents the object's position.

    Bottom-centre ("feet") by default: for people and vehicles seen from above and in front,
    it is where the object touches the ground, so a zone drawn on the floor contains it even
    when the upper body overlaps a neighbouring zone.
    """
    x1, y1, x2, y2 = box
    cx = (x1 + x2) / 2.0
    if where == "bottom_centre":
        return (cx, y2)
    if where == "top_centre":
        return (cx, y1)
    return (cx, (y1 + y2) / 2.0)


def on_border(box: Box, margin: float = 0.01) -> bool:
    """True when a normalised box touches the frame border (within ``margin``): the object is cut
    off by the edge of the view, or walking in or out of it."""
    x1, y1, x2, y2 = box
    return x1 <= margin or y1 <= margin or x2 >= 1 - margin or y2 >= 1 - margin


def cross(a: Point, b: Point, p: Point) -> float:
    """z of (b - a) x (p - a): > 0 when ``p`` is right of a->b (y-down image), < 0 when left."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def side_of(line: Segment, p: Point) -> Literal[-1, 1]:
    """-1 left of the line, +1 right of it; a point exactly on the line counts as right.

    Putting "on the line" on one side (rather than a third state) means a path that stops on
    the line and then continues is counted exactly once, whichever frame lands on it.
    """
    return 1 if cross(line[0], line[1], p) >= 0.0 else -1


def crossing(line: Segment, prev: Point, cur: Point) -> Direction | None:
    """Direction in which the move ``prev -> cur`` crosses the segment ``line``, or None.

    The move must change side (see :func:`side_of`) *and* pass between the segment's ends
    (touching an end counts); crossing the infinite extension of the line does not count.
    """
    a, b = line
    s_prev, s_cur = side_of(line, prev), side_of(line, cur)
    if s_prev == s_cur:
        return None
    # The segment's ends must lie on opposite sides of (or on) the line through the move.
    da, db = cross(prev, cur, a), cross(prev, cur, b)
    if (da > _EPS and db > _EPS) or (da < -_EPS and db < -_EPS):
        return None
    return "left_to_right" if s_prev < 0 else "right_to_left"


def signed_distance(line: Segment, p: Point) -> float:
    """Distance of ``p`` from the infinite line through ``line``: > 0 right of a->b, < 0 left."""
    (ax, ay), (bx, by) = line
    length = math.hypot(bx - ax, by - ay)
    return cross(line[0], line[1], p) / length if length > _EPS else 0.0


def committed_side(line: Segment, p: Point, margin: float, current: int | None) -> int | None:
    """The side an anchor is *clearly* on: +1 right, -1 left, once it is at least ``margin`` away
    from the line; inside that band the side stays ``current`` (hysteresis). A track's first
    anchor (``current`` None) takes the side it is on, however close: a person who walks into
    the view on a line and then crosses it has crossed it (PETS09-S2L1 has one, 9 px from the
    line when first seen), and leaving the side open would drop that crossing.

    A person standing on a line, or a box whose feet jitter by a few pixels around it, would
    otherwise change side on every frame and count a crossing each time; with a band of ``margin``
    (normalised units: 0.02 is about 12 px of a 576-px frame) a side change needs a real move.
    """
    d = signed_distance(line, p)
    if d >= margin or (current is None and d >= 0):
        return 1
    if d <= -margin or current is None:
        return -1
    return current


def distance_to_segment(p: Point, a: Point, b: Point) -> float:
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 <= _EPS else max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length2))
    return math.hypot(p[0] - (a[0] + t * dx), p[1] - (a[1] + t * dy))


def in_zone_with_hysteresis(p: Point, polygon: Sequence[Point], margin: float, was_inside: bool | None) -> bool:
    """Zone membership with a band of ``margin`` around the polygon's edges: an anchor outside
    enters only once it is ``margin`` inside, and an anchor inside leaves only once it is
    ``margin`` outside; in the band it keeps its state (feet jittering on an edge are no new stay).
    A track's first anchor (``was_inside`` None) is where it is, as for lines."""
    inside = point_in_polygon(p, polygon)
    if margin <= 0.0 or inside == was_inside or was_inside is None:
        return inside
    n = len(polygon)
    edge = min(distance_to_segment(p, polygon[i], polygon[(i + 1) % n]) for i in range(n))
    return inside if edge >= margin else was_inside


def point_in_polygon(p: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd ray casting. Points exactly on an edge may fall either way (edges are measure
    zero in normalised float coordinates, and rules only need a consistent answer)."""
    x, y = p
    inside = False
    n = len(polygon)
    j = n - 1
    for i in range(n):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        # Half-open test on y so a ray through a vertex is counted once, not twice.
        if (yi > y) != (yj > y):
            x_at_y = xi + (y - yi) * (xj - xi) / (yj - yi)
            if x < x_at_y:
                inside = not inside
        j = i
    return inside


def polygon_area(polygon: Sequence[Point]) -> float:
    """Unsigned shoelace area."""
    s = 0.0
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        s += x1 * y2 - x2 * y1
    return abs(s) / 2.0


def _segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    d1, d2 = cross(q1, q2, p1), cross(q1, q2, p2)
    d3, d4 = cross(p1, p2, q1), cross(p1, p2, q2)
    if ((d1 > _EPS and d2 < -_EPS) or (d1 < -_EPS and d2 > _EPS)) and (
        (d3 > _EPS and d4 < -_EPS) or (d3 < -_EPS and d4 > _EPS)
    ):
        return True
    # Collinear overlaps also make a polygon degenerate.
    return any(
        abs(d) <= _EPS and _on_segment(s, e, r)
        for d, s, e, r in ((d1, q1, q2, p1), (d2, q1, q2, p2), (d3, p1, p2, q1), (d4, p1, p2, q2))
    )


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def polygon_problem(polygon: Sequence[Sequence[float]]) -> str | None:
    """Why ``polygon`` is unusable as a zone, or None when it is fine.

    Checked: at least 3 points, each an (x, y) pair of finite numbers in [0, 1], non-zero
    area, and no two non-adjacent edges touching (a self-intersecting "bow tie" has an
    inside that nobody means).
    """
    if len(polygon) < 3:
        return f"a polygon needs at least 3 points, got {len(polygon)}"
    pts: list[Point] = []
    for i, pt in enumerate(polygon):
        if len(pt) != 2:
            return f"point {i} is not an (x, y) pair"
        x, y = float(pt[0]), float(pt[1])
        if not (math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            return f"point {i} ({x}, {y}) is outside the normalised frame [0, 1]"
        pts.append((x, y))
    n = len(pts)
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # adjacent edges share a vertex by construction
            if _segments_intersect(pts[i], pts[(i + 1) % n], pts[j], pts[(j + 1) % n]):
                return f"edges {i} and {j} intersect"
    # After the intersection check: a symmetric bow tie also has zero (signed) area.
    if polygon_area(pts) <= 1e-9:
        return "polygon has zero area"
    return None


def validate_polygon(polygon: Sequence[Sequence[float]]) -> tuple[Point, ...]:
    """The polygon as a tuple of points; ValueError saying what is wrong otherwise."""
    problem = polygon_problem(polygon)
    if problem is not None:
        raise ValueError(problem)
    return tuple((float(p[0]), float(p[1])) for p in polygon)


def validate_segment(line: Sequence[Sequence[float]]) -> Segment:
    """A line rule's segment: two distinct in-frame points; ValueError otherwise."""
    if len(line) != 2 or any(len(p) != 2 for p in line):
        raise ValueError("a line is two (x, y) points")
    (ax, ay), (bx, by) = ((float(p[0]), float(p[1])) for p in line)
    for x, y in ((ax, ay), (bx, by)):
        if not (math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"line point ({x}, {y}) is outside the normalised frame [0, 1]")
    if math.hypot(bx - ax, by - ay) <= 1e-9:
        raise ValueError("a line needs two distinct points")
    return ((ax, ay), (bx, by))
