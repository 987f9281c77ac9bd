"""OffsetGuard: every offset of a partition handled once in order, or the partition is rewound."""

from __future__ import annotations

import pytest

from pipeline.cloud_stage.offset_guard import GapReport, OffsetGuard
from pipeline.testing import FakeClock

pytestmark = pytest.mark.unit


def batch(guard: OffsetGuard, records: list[tuple[str, int]]) -> tuple[list[tuple[str, int]], GapReport]:
    report = GapReport()
    live = [(tp, off) for tp, off in records if guard.decide(tp, off, report) == "process"]
    return live, report


def test_contiguous_records_all_processed_and_expected_moves_on() -> None:
    guard = OffsetGuard()
    guard.start({"p0": 10, "p1": None})
    live, report = batch(guard, [("p0", 10), ("p1", 3), ("p0", 11), ("p1", 4), ("p0", 12)])
    assert len(live) == 5 and not report.rewind_to and not report.accepted
    assert guard.expected("p0") == 13 and guard.expected("p1") == 5  # p1: no commit, first seen counts


def test_a_missed_record_skips_the_rest_of_its_partition_and_asks_for_a_rewind() -> None:
    # what faust-streaming did after a restart: offset 200 (a track_started) never came
    guard = OffsetGuard()
    guard.start({"p3": 198})
    live, report = batch(guard, [("p3", 198), ("p3", 199), ("p1", 50), ("p3", 201), ("p3", 202)])
    assert live == [("p3", 198), ("p3", 199), ("p1", 50)]
    assert report.rewind_to == {"p3": 200}
    guard.rewound("p3")
    # after the seek Kafka delivers 200 onwards again
    live, report = batch(guard, [("p3", 200), ("p3", 201), ("p3", 202)])
    assert len(live) == 3 and not report.rewind_to and guard.expected("p3") == 203


def test_replays_below_expected_are_processed_and_do_not_move_expected_back() -> None:
    guard = OffsetGuard()
    guard.start({"p0": 5})
    batch(guard, [("p0", 5), ("p0", 6), ("p0", 7)])
    live, report = batch(guard, [("p0", 5), ("p0", 6)])  # redelivered (a rewind, a restart)
    assert len(live) == 2 and not report.rewind_to and guard.expected("p0") == 8


def test_the_seek_after_an_assignment_sets_where_the_partition_resumes() -> None:
    guard = OffsetGuard()
    batch(guard, [("p3", 179), ("p3", 180)])  # fetched before Faust's seek: counted from the first seen
    guard.start({"p3": 179})  # the seek: committed offset 179
    live, report = batch(guard, [("p3", 181)])  # 179, 180 may have been skipped on the way: rewind
    assert not live and report.rewind_to == {"p3": 179}


def test_stale_records_right_after_a_rewind_do_not_use_up_the_rewinds() -> None:
    clock = FakeClock(100.0)
    guard = OffsetGuard(max_rewinds=2, settle_s=1.0, clock=clock)
    guard.start({"p0": 0})
    _, report = batch(guard, [("p0", 5)])
    assert report.rewind_to == {"p0": 0}
    guard.rewound("p0")
    clock.advance(0.2)
    live, report = batch(guard, [("p0", 6), ("p0", 7)])  # still draining the old fetch
    assert not live and not report.rewind_to
    clock.advance(1.0)
    live, report = batch(guard, [("p0", 0), ("p0", 1)])
    assert len(live) == 2


def test_a_gap_that_outlives_max_rewinds_is_accepted_and_reported() -> None:
    clock = FakeClock(100.0)
    guard = OffsetGuard(max_rewinds=2, settle_s=1.0, clock=clock)
    guard.start({"p0": 0})
    for _ in range(2):  # e.g. retention deleted offsets 0..4: Kafka never has them again
        _, report = batch(guard, [("p0", 5)])
        assert report.rewind_to == {"p0": 0}
        guard.rewound("p0")
        clock.advance(1.5)
    live, report = batch(guard, [("p0", 5), ("p0", 6)])
    assert live == [("p0", 5), ("p0", 6)]
    assert report.accepted == [("p0", 0, 5)] and guard.expected("p0") == 7


def test_a_partition_with_records_waiting_and_no_progress_is_stalled() -> None:
    clock = FakeClock(100.0)
    guard = OffsetGuard(stall_s=10.0, clock=clock)
    guard.start({"p0": 40, "p1": 20, "p2": None})
    batch(guard, [("p0", 40), ("p1", 20)])
    guard.progressed("p0")
    guard.progressed("p1")
    clock.advance(9.0)
    assert guard.stalled({"p0": 60, "p1": 21, "p2": 7}) == {}  # not long enough
    clock.advance(2.0)
    # p0: 41..59 wait in Kafka; p1: caught up (highwater 21 = expected); p2: never saw a record
    assert guard.stalled({"p0": 60, "p1": 21, "p2": 7, "p3": None}) == {"p0": 41}
    guard.rewound("p0")
    assert guard.stalled({"p0": 60}) == {}  # the rewind restarts the clock


def test_a_stall_that_rewinds_do_not_cure_is_given_up_after_max_rewinds() -> None:
    # e.g. Apache Kafka with a transaction marker last: highwater is one past the last record
    clock = FakeClock(100.0)
    guard = OffsetGuard(max_rewinds=2, stall_s=10.0, clock=clock)
    guard.start({"p0": 8})
    for _ in range(2):
        clock.advance(11.0)
        assert guard.stalled({"p0": 9}) == {"p0": 8}
        guard.rewound("p0")
    clock.advance(11.0)
    assert guard.stalled({"p0": 9}) == {}
    batch(guard, [("p0", 8)])  # a record at last: the count starts again
    clock.advance(11.0)
    assert guard.stalled({"p0": 10}) == {"p0": 9}


def test_reset_forgets_partitions() -> None:
    guard = OffsetGuard()
    guard.start({"p0": 3})
    guard.reset()
    assert guard.expected("p0") is None
    live, report = batch(guard, [("p0", 9)])
    assert live == [("p0", 9)] and not report.rewind_to
