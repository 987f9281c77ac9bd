"""Dwell alerts matched one to one to the GT stays they belong to (benchmarks/accuracy/counting.py),
at the resolution of a pipeline sampling every 0.2 s."""

from __future__ import annotations

import pytest

from benchmarks.accuracy.counting import DwellAlert, match_dwell_alerts, stay_spans

pytestmark = pytest.mark.unit

STAYS = {
    1: [(0.0, 8.0), (20.0, 25.0)],  # clearly over 5 s, then on the threshold
    2: [(3.0, 6.0)],  # clearly under
    3: [(10.0, 15.3)],  # clearly over
}


def on(gid: int, t: float, affinity: float = 0.8) -> DwellAlert:
    return DwellAlert(t, {gid: affinity})


def test_every_stay_clearly_over_alerted_once_and_nothing_else_is_exact() -> None:
    m = match_dwell_alerts(STAYS, [on(1, 5.0), on(3, 15.8)])  # the second at the exit, 0.5 s after
    assert (m.over, m.over_alerted, m.borderline, m.borderline_alerted, m.wrong) == (2, 2, 1, 0, 0)
    m = match_dwell_alerts(STAYS, [on(1, 5.0), on(3, 15.8), on(1, 25.2)])
    assert (m.borderline_alerted, m.wrong) == (1, 0), "a borderline stay may fire"


def test_missed_stays_extra_alerts_and_alerts_on_nobody_are_counted() -> None:
    alerts = [on(1, 5.0), on(1, 6.0), on(2, 5.9), DwellAlert(9.0, {}), on(3, 30.0)]
    m = match_dwell_alerts(STAYS, alerts)
    assert m.over_alerted == 1, "GT 3's stay has no alert in it (30 s is long after it)"
    # a second alert on GT 1's first stay, one on GT 2's short stay, one on nobody, one outside any stay
    assert m.wrong == 4


def test_two_people_standing_together_each_get_their_alert() -> None:
    """Both alerts' boxes touch both people; the first fits person 1 better. One to one, person 2's
    stay takes the second alert even though it fits person 1 a little better too."""
    together = {1: [(0.0, 18.0)], 2: [(0.0, 17.0)]}
    alerts = [DwellAlert(5.6, {1: 0.7, 2: 0.2}), DwellAlert(11.2, {1: 0.3, 2: 0.25})]
    m = match_dwell_alerts(together, alerts)
    assert (m.over, m.over_alerted, m.wrong) == (2, 2, 0)


def test_stay_spans_time_each_run_inside_from_first_to_last_sample() -> None:
    zone = [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]
    xs = [0.6, 0.4, 0.3, 0.7, 0.2, 0.1, 0.9]
    assert stay_spans([(t * 0.2, (x, 0.5)) for t, x in enumerate(xs)], zone) == pytest.approx([(0.2, 0.4), (0.8, 1.0)])
