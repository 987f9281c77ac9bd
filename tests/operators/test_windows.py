from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.operators.windows import SlidingDistinct, TumblingCounter, WindowTotal, window_start

pytestmark = pytest.mark.unit


def test_sliding_distinct_counts_keys_not_sightings() -> None:
    w = SlidingDistinct(window_ms=1000)
    for t in (0, 100, 200):
        w.add("a", t)
    w.add("b", 300)
    assert w.count(300) == 2
    assert w.count(1199) == 2  # "a" last seen at 200, still inside (199, 1199]
    assert w.count(1200) == 1  # "a" expired at exactly window_ms after its last sighting
    assert w.count(1300) == 0


def test_out_of_order_sightings_stay_exact() -> None:
    w = SlidingDistinct(window_ms=1000)
    w.add("late", 1000)
    w.add("early", 100)  # arrives after, happened before
    assert w.keys(1050) == ["early", "late"]
    assert w.count(1100) == 1  # "early" expired, "late" remains


def test_bounded_with_eviction_counted() -> None:
    w = SlidingDistinct(window_ms=10_000, max_entries=3)
    for i in range(5):
        w.add(f"k{i}", i)
    assert len(w) == 3 and w.evicted == 2
    assert w.keys(5) == ["k2", "k3", "k4"]


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 5000)), max_size=40), st.integers(0, 6000))
def test_matches_a_naive_model_and_survives_json(events: list[tuple[str, int]], now: int) -> None:
    w = SlidingDistinct(window_ms=1000)
    last: dict[str, int] = {}
    for k, t in events:
        w.add(k, t)
        last[k] = max(last.get(k, t), t)
    restored = SlidingDistinct.from_state(json.loads(json.dumps(w.to_state())), 1000)
    expected = {k for k, t in last.items() if t > now - 1000}
    assert set(restored.keys(now)) == expected
    assert w.count(now) == len(expected)


def test_window_start_alignment() -> None:
    assert window_start(12_345, 1000) == 12_000
    assert window_start(12_345, 1000, offset_ms=500) == 11_500
    assert window_start(-1, 1000) == -1000


def test_tumbling_counter_closes_windows_and_counts_late() -> None:
    c = TumblingCounter(size_ms=1000)
    assert c.add(100) == [] and c.add(900, 2) == []
    assert c.add(2500) == [WindowTotal(0, 1000, 3)]
    assert c.add(1500) == [] and c.late == 1
    assert c.flush() == [WindowTotal(2000, 3000, 1)]
    assert c.flush() == []
