"""The metrics registry's bounded latency samples keep their quantiles when thinned."""

from __future__ import annotations

import random

import pytest

from pipeline.metrics import Registry

pytestmark = pytest.mark.unit


def test_quantiles_stay_put_when_the_sample_buffer_is_thinned() -> None:
    reg = Registry()
    rng = random.Random(7)
    values = [rng.uniform(0, 1) for _ in range(50_000)]  # 5x the cap: thinned several times
    for v in values:
        reg.observe("lat", v)
    for q in (0.5, 0.95, 0.99):
        got = reg.quantile("lat", q)
        assert got is not None and abs(got - q) < 0.03, (q, got)  # uniform(0, 1): quantile q is q
