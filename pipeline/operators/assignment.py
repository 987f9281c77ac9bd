"""Minimum-cost bipartite assignment (Hungarian / Kuhn-Munkres), pure Python.

The tracker needs optimal track<->detection matching, and scipy's ``linear_sum_assignment`` is
not available on the edge nodes. Matrices there are tiny (tens of tracks), so the O(n^2 m)
shortest-augmenting-path form below is plenty fast and has no dependencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def linear_assignment(cost: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """Pairs ``(row, col)`` of a minimum-total-cost matching of size ``min(rows, cols)``.

    Rectangular matrices are fine; every row (or every column, whichever is fewer) is
    assigned. Costs must be finite. Result is sorted by row.
    """
    n = len(cost)
    if n == 0:
        return []
    m = len(cost[0])
    if m == 0:
        return []
    if any(len(r) != m for r in cost):
        raise ValueError("cost matrix rows differ in length")
    if any(not math.isfinite(c) for r in cost for c in r):
        raise ValueError("cost matrix must be finite")
    if n > m:
        # The algorithm assigns every row, so it needs rows <= cols: solve the transpose.
        transposed = [[cost[i][j] for i in range(n)] for j in range(m)]
        return sorted((i, j) for j, i in _solve(transposed))
    return sorted(_solve(cost))


def _solve(cost: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    # 1-indexed potentials u (rows), v (cols); p[j] = row assigned to column j; column 0 is
    # the virtual start of each augmenting path.
    n, m = len(cost), len(cost[0])
    inf = math.inf
    u = [0.0] * (n + 1)
    v = [0.0] * (m + 1)
    p = [0] * (m + 1)
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0 = p[j0]
            delta = inf
            j1 = 0
            row = cost[i0 - 1]
            for j in range(1, m + 1):
                if not used[j]:
                    cur = row[j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:  # flip the augmenting path
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    return [(p[j] - 1, j - 1) for j in range(1, m + 1) if p[j] != 0]
