"""A cheap appearance cue for re-identifying a track: colour histograms and their similarity.

What Norfair's re-identification and Frigate's tracker lean on when motion alone is ambiguous
(two people crossing, a person reappearing after an occlusion): the colours of the clothes. The
edge computes a hue/saturation histogram of the upper and lower half of each person box
(:func:`pipeline.edge_stage.appearance.box_histograms`, ~0.1 ms a box); everything here is pure.

A feature is a tuple of non-negative floats summing to 1 (an L1-normalised histogram). Similarity
is the Bhattacharyya coefficient: 1 for identical distributions, 0 for disjoint ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Feature = tuple[float, ...]


def similarity(a: Sequence[float] | None, b: Sequence[float] | None) -> float | None:
    """Bhattacharyya coefficient of two histograms; None when either is missing or they differ in size."""
    if a is None or b is None or len(a) != len(b) or not a:
        return None
    return min(1.0, sum(math.sqrt(max(x, 0.0) * max(y, 0.0)) for x, y in zip(a, b, strict=True)))


def blend(old: Sequence[float] | None, new: Sequence[float] | None, alpha: float) -> Feature | None:
    """Exponential moving average of a track's appearance (``alpha`` = weight of the new one)."""
    if new is None:
        return tuple(old) if old is not None else None
    if old is None or len(old) != len(new):
        return tuple(new)
    mixed = [(1.0 - alpha) * x + alpha * y for x, y in zip(old, new, strict=True)]
    total = sum(mixed) or 1.0
    return tuple(v / total for v in mixed)
