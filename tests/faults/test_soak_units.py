"""The soak's schedule and fault runner without processes: targets that take a while to start."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.chaos.soak_faults import FaultRunner, Target
from pipeline.chaos.soak_schedule import Fault, FaultKind, SoakPlan, count_by_kind, make_schedule

pytestmark = pytest.mark.unit


class SlowTarget(Target):
    """Starts in ``start_s``; a kill during the start makes it fail (as a killed process does)."""

    def __init__(self, kind: FaultKind, name: str, start_s: float = 0.3) -> None:
        super().__init__(kind, name)
        self.start_s = start_s
        self.kills = 0
        self.starts = 0
        self._killed = threading.Event()

    def kill(self) -> bool:
        self.kills += 1
        self._killed.set()
        return True

    def start(self) -> None:
        self.starts += 1
        self._killed.clear()
        if self._killed.wait(self.start_s):
            raise RuntimeError("killed while starting")


def test_schedule_draws_every_kind_with_follow_ups_and_is_seeded() -> None:
    plan = SoakPlan(600, seed=5)
    faults = make_schedule(plan)
    counts = count_by_kind(faults)
    assert all(n > 0 for n in counts.values()), counts
    assert faults == make_schedule(SoakPlan(600, seed=5))
    follow = [i for i, f in enumerate(faults) if f.follow_up]
    assert follow and all(not faults[i - 1].follow_up and faults[i - 1].kind == faults[i].kind for i in follow)
    assert all(b.at_s - a.at_s >= 0.99 for a, b in zip(
        [f for f in faults if not f.follow_up], [f for f in faults if not f.follow_up][1:], strict=False))  # fmt: skip


def test_min_kills_stretch_the_schedule_and_the_stream() -> None:
    short, long = SoakPlan(100, seed=3), SoakPlan(100, seed=3, min_kills={"worker": 50})
    assert long.events == 4 * short.events
    assert make_schedule(long)[: len(make_schedule(short))] == make_schedule(short)


def test_runner_kills_restarts_and_retries_a_start_killed_by_its_follow_up() -> None:
    w0, w1 = SlowTarget("worker", "w0"), SlowTarget("worker", "w1")
    schedule = [
        Fault(0.05, "worker", 0, 0.1),
        Fault(0.15, "worker", -1, 0.1, follow_up=True, delay_s=0.1, same_target=True),  # lands while w0 starts
        Fault(0.1, "worker", 0, 0.1),  # w0 is down then: w1 is taken instead
    ]
    runner = FaultRunner({"worker": [w0, w1]}, schedule, seed=1)
    began = time.monotonic()
    runner.run(began, began + 0.5, give_up_s=10)
    assert runner.all_up()
    assert [(r.target, r.follow_up) for r in runner.records] == [("w0", False), ("w1", False), ("w0", True)]
    assert runner.start_failures == 1 and w0.starts == 2 and w1.starts == 1
    assert all(r.back_at is not None and r.outage_s is not None and r.outage_s > 0 for r in runner.records)


def test_runner_skips_a_fault_whose_only_target_is_down_and_stops_when_enough() -> None:
    mqtt = SlowTarget("mosquitto", "mosquitto", start_s=0.4)
    schedule = [Fault(0.0, "mosquitto", 0, 0.2), Fault(0.1, "mosquitto", 0, 0.2), Fault(5.0, "mosquitto", 0, 0.2)]
    runner = FaultRunner({"mosquitto": [mqtt]}, schedule, seed=1)
    began = time.monotonic()
    runner.run(began, began + 0.2, give_up_s=10, enough=lambda: len(runner.records) >= 1)
    assert len(runner.records) == 1 and len(runner.skipped) == 1  # the one at 5 s never ran
    assert time.monotonic() - began < 3
