"""Line crossings, zone entries and dwells the benchmark defines, computed from trajectories.

The ground-truth figures come from the GT boxes (every GT frame, anchor = box bottom-centre, the
same "feet" point the rules use), with :func:`pipeline.operators.geometry.crossing` deciding each
move: a crossing is a change of side that passes between the segment's ends. Time is the file's
clock (frame index x 100 ms at vtest.avi's declared 10 fps), as the edge stamps events.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.operators.geometry import Point, Segment, crossing, point_in_polygon

# The scene's rules (normalised coordinates). PETS09-S2L1 view 001: people cross the plaza
# left-right and up-down; both lines and the zone are crossed by several GT identities.
LINES: dict[str, Segment] = {
    "line-centre": ((0.5, 0.2), (0.5, 1.0)),  # vertical, drawn downwards
    "line-plaza": ((0.0, 0.6), (1.0, 0.6)),  # horizontal, drawn left to right
}
ZONE: tuple[Point, ...] = ((0.3, 0.35), (0.7, 0.35), (0.7, 0.75), (0.3, 0.75))
DWELL_S = 5.0
DIRECTIONS = ("left_to_right", "right_to_left")


def count_crossings(path: Sequence[Point], line: Segment) -> dict[str, int]:
    """Crossings of ``line`` by consecutive points of one trajectory, per direction."""
    out = dict.fromkeys(DIRECTIONS, 0)
    for p, q in itertools.pairwise(path):
        d = crossing(line, p, q)
        if d is not None:
            out[d] += 1
    return out


@dataclass(frozen=True, slots=True)
class ZoneStays:
    entries: int
    dwells: int  # stays of at least dwell_s


def zone_stays(samples: Sequence[tuple[float, Point]], zone: Sequence[Point], dwell_s: float) -> ZoneStays:
    """Stays of one trajectory (``(t_s, anchor)`` in time order) inside ``zone``."""
    entries = dwells = 0
    since: float | None = None
    dwelled = False
    for t, p in samples:
        if point_in_polygon(p, zone):
            if since is None:
                since, dwelled = t, False
                entries += 1
            if not dwelled and t - since >= dwell_s:
                dwelled = True
                dwells += 1
        else:
            since = None
    return ZoneStays(entries, dwells)
