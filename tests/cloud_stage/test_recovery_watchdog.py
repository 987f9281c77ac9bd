"""RecoveryWatchdog: a table recovery that receives no changelog record is re-seeked, then rebalanced.

The stall itself was seen in ``tests/faults/test_scenarios.py::test_one_of_two_faust_workers_killed``
under load (see pipeline/cloud_stage/recovery_watchdog.py); here the decision and the actions are
checked with a fake clock and a fake consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

import pytest

from pipeline.cloud_stage import recovery_watchdog
from pipeline.cloud_stage.recovery_watchdog import Kick, RecoveryWatchdog, kick
from pipeline.metrics import Registry
from pipeline.testing import FakeClock

pytestmark = pytest.mark.unit

# Faust's highwaters: last offset, -1 when empty
HW: dict[Hashable, int | None] = {"seen-0": 7, "rules-0": 15, "empty-0": -1}


def test_a_recovery_that_receives_nothing_is_reseeked_then_rebalanced() -> None:
    clock = FakeClock()
    dog = RecoveryWatchdog(10.0, clock)
    offsets: dict[Any, int | None] = {"seen-0": -1, "rules-0": -1, "empty-0": -1}  # what the survivor logged
    assert dog.check(True, offsets, HW) is None
    clock.advance(9.9)
    assert dog.check(True, offsets, HW) is None
    clock.advance(0.1)
    first = dog.check(True, offsets, HW)
    assert first == Kick("reseek", {"seen-0": 0, "rules-0": 0})  # the empty partition needs nothing
    clock.advance(5)
    assert dog.check(True, offsets, HW) is None  # one kick per stall_s
    clock.advance(5)
    second = dog.check(True, offsets, HW)
    assert second is not None and second.action == "rejoin"
    clock.advance(10)
    third = dog.check(True, offsets, HW)
    assert third is not None and third.action == "rejoin"  # and again, for as long as it is stuck


def test_progress_restarts_the_stall_clock_and_targets_the_next_needed_offset() -> None:
    clock = FakeClock()
    dog = RecoveryWatchdog(10.0, clock)
    dog.check(True, {"seen-0": -1, "rules-0": -1}, HW)
    clock.advance(8)
    assert dog.check(True, {"seen-0": 3, "rules-0": -1}, HW) is None  # records applied: progress
    clock.advance(8)
    assert dog.check(True, {"seen-0": 3, "rules-0": -1}, HW) is None
    clock.advance(2)
    assert dog.check(True, {"seen-0": 3, "rules-0": -1}, HW) == Kick("reseek", {"seen-0": 4, "rules-0": 0})


def test_a_slow_but_moving_recovery_is_left_alone() -> None:
    clock = FakeClock()
    dog = RecoveryWatchdog(10.0, clock)
    for applied in range(-1, 15):
        assert dog.check(True, {"rules-0": applied}, HW) is None
        clock.advance(9)
    assert dog.history == []


def test_nothing_to_do_outside_recovery_or_when_caught_up() -> None:
    clock = FakeClock()
    dog = RecoveryWatchdog(10.0, clock)
    for _ in range(5):
        assert dog.check(False, {"seen-0": -1}, HW) is None  # not recovering: highwaters are stale
        assert dog.check(True, {"seen-0": 7, "rules-0": 15}, HW) is None  # caught up, Faust ends it
        clock.advance(30)
    assert dog.history == []


def test_a_new_recovery_starts_with_a_reseek_again() -> None:
    clock = FakeClock()
    dog = RecoveryWatchdog(10.0, clock)
    stuck: dict[Hashable, int | None] = {"seen-0": -1}
    for _ in range(3):
        dog.check(True, stuck, HW)
        clock.advance(10)
    assert [k.action for k in dog.history] == ["reseek", "rejoin"]
    dog.check(False, stuck, HW)  # the rebalance ended that recovery
    dog.check(True, stuck, HW)
    clock.advance(10)
    k = dog.check(True, stuck, HW)
    assert k is not None and k.action == "reseek"


class FakeConsumer:
    def __init__(self, seek_hangs: bool = False) -> None:
        self.resumed: list[Any] = []
        self.seeks: list[dict[Any, int]] = []
        self.seek_hangs = seek_hangs

    def resume_partitions(self, tps: Any) -> None:
        self.resumed.extend(tps)

    async def seek_wait(self, offsets: dict[Any, int]) -> None:
        self.seeks.append(dict(offsets))
        if self.seek_hangs:
            await asyncio.sleep(3600)


class FakeApp:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer


def test_kick_reseeks_and_resumes_the_waiting_partitions() -> None:
    consumer = FakeConsumer()
    metrics = Registry()
    done = asyncio.run(kick(FakeApp(consumer), Kick("reseek", {"seen-0": 4}), metrics, 10.0))  # type: ignore[arg-type]
    assert done == "reseek"
    assert consumer.resumed == ["seen-0"] and consumer.seeks == [{"seen-0": 4}]
    assert 'pipeline_cloud_recovery_kicks_total{action="reseek"} 1' in metrics.render()


def test_a_hanging_reseek_becomes_a_rejoin(monkeypatch: pytest.MonkeyPatch) -> None:
    rejoins: list[object] = []
    monkeypatch.setattr(recovery_watchdog, "SEEK_TIMEOUT_S", 0.05)
    monkeypatch.setattr(recovery_watchdog, "_request_rejoin", rejoins.append)
    app = FakeApp(FakeConsumer(seek_hangs=True))
    done = asyncio.run(kick(app, Kick("reseek", {"seen-0": 0}), Registry(), 10.0))  # type: ignore[arg-type]
    assert done == "rejoin" and rejoins == [app]


def test_the_fence_switches_the_watchdog_off_on_an_unverified_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    fence = recovery_watchdog.FENCES[0]
    monkeypatch.setattr(type(fence), "installed", lambda self: "0.0.1")
    assert recovery_watchdog.install(object(), 10.0, Registry()) is None  # type: ignore[arg-type]


def test_the_private_names_the_rejoin_uses_exist() -> None:
    # _request_rejoin: consumer._thread (ThreadDelegateConsumer), thread._ensure_consumer(),
    # thread.thread_loop, AIOKafkaConsumer._coordinator, GroupCoordinator.request_rejoin()
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from faust.transport.consumer import ThreadDelegateConsumer  # what faust_aiokafka imports
    from faust.transport.drivers import aiokafka as faust_aiokafka

    assert callable(faust_aiokafka.AIOKafkaConsumerThread._ensure_consumer)
    assert callable(GroupCoordinator.request_rejoin)
    assert issubclass(faust_aiokafka.Consumer, ThreadDelegateConsumer)
