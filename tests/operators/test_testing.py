from __future__ import annotations

import pytest

from pipeline.testing import FakeClock, scripted_track

pytestmark = pytest.mark.unit


def test_fake_clock_moves_only_when_told() -> None:
    c = FakeClock(1.0)
    assert c() == 1.0 and c.now_ms() == 1000
    assert c.advance(0.25) == 1.25 == c()
    assert c.now_ms() == 1250
    with pytest.raises(ValueError):
        c.advance(-1)


def test_scripted_track_is_deterministic_and_in_frame() -> None:
    a = scripted_track((0.1, 0.5), (0.5, 0.0), frames=20, fps=10, jitter=0.01, seed=3)
    assert a == scripted_track((0.1, 0.5), (0.5, 0.0), frames=20, fps=10, jitter=0.01, seed=3)
    assert [t for t, _ in a[:3]] == [0, 100, 200]
    for _, (x1, y1, x2, y2) in a:
        assert 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1
    x1, _, x2, _ = a[10][1]
    assert (x1 + x2) / 2 == pytest.approx(0.1 + 0.5 * 1.0, abs=0.01)
