from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.operators.assignment import linear_assignment

pytestmark = pytest.mark.unit


def _brute_force(cost: list[list[float]]) -> float:
    n, m = len(cost), len(cost[0])
    if n <= m:
        return min(sum(cost[i][p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
    return min(sum(cost[p[j]][j] for j in range(m)) for p in itertools.permutations(range(n), m))


def test_empty() -> None:
    assert linear_assignment([]) == []
    assert linear_assignment([[]]) == []


def test_prefers_global_optimum_over_greedy() -> None:
    # Greedy would take (0, 0) at cost 1 and then be forced into (1, 1) at 100.
    cost = [[1.0, 2.0], [2.0, 100.0]]
    assert linear_assignment(cost) == [(0, 1), (1, 0)]


def test_rejects_non_finite() -> None:
    with pytest.raises(ValueError):
        linear_assignment([[float("inf")]])


matrices = st.integers(1, 5).flatmap(
    lambda n: st.integers(1, 5).flatmap(
        lambda m: st.lists(st.lists(st.floats(0, 10, allow_nan=False), min_size=m, max_size=m), min_size=n, max_size=n)
    )
)


@given(matrices)
@settings(max_examples=200, deadline=None)
def test_matches_brute_force(cost: list[list[float]]) -> None:
    pairs = linear_assignment(cost)
    n, m = len(cost), len(cost[0])
    assert len(pairs) == min(n, m)
    assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
    assert sum(cost[i][j] for i, j in pairs) == pytest.approx(_brute_force(cost), abs=1e-9)
