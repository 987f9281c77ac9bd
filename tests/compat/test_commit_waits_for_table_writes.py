"""A commit of a gated topic waits for the table writes already sent (pipeline/compat/faust_app.py,
point 5): faust's own flush before a commit gives up after 0.1 s on one record and leaves the rest
queued, so a crash right after the commit lost rule state whose events were committed (found by
forcing a 0.15 s hand-off: a track alerted twice, with a new id, after a SIGKILL)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from pipeline.cloud_stage.offset_guard import ProcessedOffsets
from pipeline.compat import faust_app
from pipeline.compat.faust_app import SendTracker

pytestmark = pytest.mark.unit

TP0 = TP("events", 0)


def test_the_tracker_waits_for_every_record_sent_until_done() -> None:
    async def scenario() -> tuple[bool, int, bool, int]:
        loop = asyncio.get_running_loop()
        tracker = SendTracker()
        acked, queued = loop.create_future(), loop.create_future()
        tracker.add(acked)
        tracker.add(queued)
        acked.set_result(None)
        timed_out = await tracker.wait(0.05)
        pending = tracker.pending
        loop.call_later(0.02, queued.set_exception, RuntimeError("send failed"))  # done, though failed
        done = await tracker.wait(1.0)
        queued.exception()  # retrieved: no "exception never retrieved" warning
        return timed_out, pending, done, tracker.pending

    assert asyncio.run(scenario()) == (False, 1, True, 0)


def test_a_commit_waits_for_sent_table_writes_and_is_skipped_if_they_stay_unacknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    committed: list[dict[TP, int]] = []

    async def upstream_commit(self: Any, offsets: dict[TP, int], start_new_transaction: bool = True) -> bool:
        committed.append(dict(offsets))
        return True

    async def nothing_buffered(self: Any) -> None:  # faust's own flush, with an empty buffer
        return None

    monkeypatch.setattr(faust_aiokafka.Consumer, "_commit_offsets", upstream_commit)
    monkeypatch.setattr(faust_app._Producer, "flush", nothing_buffered)
    monkeypatch.setattr(faust_app, "COMMIT_SEND_WAIT_S", 0.05)
    assert faust_app._Transport.Producer is faust_app._Producer, "the app's transport makes our producer"

    async def scenario() -> tuple[bool, bool]:
        # our consumer and producer without Kafka clients behind them (building those starts
        # aiokafka's threads and loops); the commit path under test reads only these attributes
        producer = faust_app._Producer.__new__(faust_app._Producer)
        producer.sends = SendTracker()
        consumer = faust_app._Consumer.__new__(faust_app._Consumer)
        app: Any = SimpleNamespace(producer=producer, commit_gate=ProcessedOffsets(frozenset({TP0.topic})))
        consumer.app = app
        write = asyncio.get_running_loop().create_future()
        producer.sends.add(write)  # a rule-state write sent, not acknowledged yet
        held = await consumer._commit_offsets({TP0: 7})
        write.set_result(None)
        return held, await consumer._commit_offsets({TP0: 7})

    assert asyncio.run(scenario()) == (False, True)
    assert committed == [{TP0: 7}], "only the commit after the write was acknowledged went through"
