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


def test_counter_and_quantile_sum_every_series_that_has_the_labels_asked_for() -> None:
    reg = Registry()
    reg.inc("frames_corrupt_total", cam="c1", why="none")
    reg.inc("frames_corrupt_total", 2, cam="c1", why="malformed")
    reg.inc("frames_corrupt_total", 4, cam="c2", why="none")
    assert reg.counter("frames_corrupt_total", cam="c1") == 3
    assert reg.counter("frames_corrupt_total", why="none") == 5
    assert reg.counter("frames_corrupt_total", cam="c1", why="malformed") == 2
    assert reg.counter("frames_corrupt_total") == 7
    assert reg.counter("frames_corrupt_total", cam="c3") == 0
    reg.observe("lat", 1.0, cam="c1")
    reg.observe("lat", 3.0, cam="c2")
    assert reg.quantile("lat", 0.5, cam="c1") == 1.0 and reg.quantile("lat", 0.99) == 3.0
