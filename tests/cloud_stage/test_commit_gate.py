"""faust-streaming 0.15.3 commits past records its agent never got; the commit gate does not.

Real Faust code throughout (its stream, its ``take_events``, its consumer's commit bookkeeping),
no broker: records are put on a channel the way Faust's fetch loop hands them over, and the
offsets Faust would commit are read where ``Consumer.commit`` reads them. The first two tests
show the upstream behaviour (if they fail after an upgrade, ``pipeline/compat/faust_app.py``'s
commit gate may be removable); the others show the gate closing it. docs/faults.md, finding 10.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.transport.consumer import ThreadDelegateConsumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from pipeline.cloud_stage.app import build_app
from pipeline.cloud_stage.offset_guard import GapReport, OffsetGuard, ProcessedOffsets
from pipeline.compat.faust_app import PipelineFaustApp
from pipeline.metrics import Registry
from pipeline.settings import Settings

pytestmark = pytest.mark.unit

TOPIC = "events"
TP0 = TP(TOPIC, 0)
GENERATION = 2  # the consumer's current generation; 1 is the one before the rebalance


class Harness:
    """A Faust app whose agent takes batches from a channel; ``agent`` sees each batch."""

    def __init__(self, app: faust.App, agent: Any) -> None:
        self.app = app
        app.topics.acking_topics.add(TOPIC)
        app.flow_control.resume()
        app.consumer_generation_id = GENERATION
        consumer = app.consumer
        # Faust's Kafka consumer (its commit bookkeeping, read below) and stream (take_events) are
        # these classes; their interfaces (ConsumerT, StreamT) declare neither.
        assert isinstance(consumer, ThreadDelegateConsumer), consumer
        self.consumer = consumer
        self.channel = app.channel()
        stream = self.channel.stream()
        assert isinstance(stream, faust.Stream), stream
        self.stream = stream
        self.agent = agent
        self.got: list[int] = []

    async def run(self) -> None:
        async for events in self.stream.take_events(100, within=0.05):
            self.got += [e.message.offset for e in events]
            await self.agent(events)

    async def deliver(self, *records: tuple[int, int]) -> None:
        """Records (offset, generation id) as the fetch loop hands them to the stream."""
        for offset, generation in records:
            message = ConsumerMessage(TOPIC, 0, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation)
            await self.channel.put(self.app.create_event(b"k", b"v", None, message))

    async def close(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.consumer._thread.thread_loop.close()  # the consumer thread's loop (never started here)

    def committable(self) -> dict[TP, int]:
        """What ``Consumer.commit`` would commit now."""
        return dict(self.consumer._filter_committable_offsets([TP0]))


async def _settle(h: Harness, n: int) -> None:
    for _ in range(200):
        if len(h.got) >= n:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.15)  # take_events acks a batch when the agent asks for the next one


async def _noop(events: list[Any]) -> None:
    return None


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_upstream_faust_commits_past_a_record_skipped_after_a_rebalance() -> None:
    """Record 10 was fetched under the previous generation: the stream skips it (the agent never
    gets it), the agent gets 11, and Faust's next commit is 12: record 10 is lost on a crash."""

    async def scenario() -> tuple[list[int], dict[TP, int]]:
        h = Harness(faust.App("upstream-skip", broker="kafka://127.0.0.1:1", store="memory://"), _noop)
        h.consumer._committed_offset[TP0] = 10  # where the post-rebalance seek put the partition
        task = asyncio.create_task(h.run())
        await h.deliver((10, GENERATION - 1), (11, GENERATION))
        await _settle(h, 1)
        await h.close(task)
        return h.got, h.committable()

    got, commit = _run(scenario())
    assert got == [11]
    assert commit == {TP0: 12}  # upstream: one record at the head may be missing (min(acked) - committed > 1)


def test_upstream_faust_commits_past_a_jump_in_fetched_offsets() -> None:
    """The fetch loop treats a jump in offsets as a compaction gap and counts it as acked."""

    async def scenario() -> dict[TP, int]:
        h = Harness(faust.App("upstream-gap", broker="kafka://127.0.0.1:1", store="memory://"), _noop)
        h.consumer._committed_offset[TP0] = 10
        task = asyncio.create_task(h.run())
        await h.deliver((10, GENERATION))
        await _settle(h, 1)
        await h.consumer._add_gap(TP0, 11, 14)  # as _drain_messages does when 15 follows 10
        await h.deliver((15, GENERATION))
        await _settle(h, 2)
        await h.close(task)
        return h.committable()

    assert _run(scenario()) == {TP0: 16}  # records 11..14 never reached the agent


def _gated(name: str) -> tuple[PipelineFaustApp, OffsetGuard, ProcessedOffsets, Any]:
    """Our app with the cloud stage's commit gate wiring: guard decides, processed sets the ceiling."""
    app = PipelineFaustApp(name, broker="kafka://127.0.0.1:1", store="memory://")
    guard = OffsetGuard()
    processed = ProcessedOffsets(frozenset({TOPIC}))
    app.commit_gate = processed
    rewinds: list[int] = []

    async def agent(events: list[Any]) -> None:  # CloudProcessor.handle, without the processing
        report = GapReport()
        live = [e for e in events if guard.decide(e.message.tp, e.message.offset, report) == "process"]
        rewinds.extend(report.rewind_to.values())
        processed.finished({e.message.tp: guard.expected(e.message.tp) for e in live}, processed.epoch)

    def on_seek(offsets: dict[Any, int]) -> None:
        guard.start({tp: offset for tp, offset in offsets.items()})

    app.seek_listeners.append(on_seek)
    return app, guard, processed, (agent, rewinds)


def test_commit_gate_holds_the_commit_at_a_record_the_agent_never_got() -> None:
    async def scenario() -> tuple[list[int], dict[TP, int], list[int], dict[TP, int]]:
        app, guard, _, (agent, rewinds) = _gated("gate-skip")
        h = Harness(app, agent)
        h.consumer._committed_offset[TP0] = 10
        guard.start({TP0: 10})
        task = asyncio.create_task(h.run())
        await h.deliver((10, GENERATION - 1), (11, GENERATION))
        await _settle(h, 1)
        held = h.committable()
        await h.deliver((10, GENERATION), (11, GENERATION))  # the guard's rewind brings them again
        await _settle(h, 3)
        await h.close(task)
        return h.got, held, rewinds, h.committable()

    got, held, rewinds, after = _run(scenario())
    assert got == [11, 10, 11]
    assert held == {}  # nothing processed in order yet: no commit (Faust alone: 12)
    assert rewinds == [10]
    assert after == {TP0: 12}


def test_commit_gate_ignores_faust_gap_marks_and_batches_from_before_a_rebalance() -> None:
    async def scenario() -> tuple[dict[TP, int], dict[TP, int]]:
        app, guard, processed, (agent, _) = _gated("gate-gap")
        h = Harness(app, agent)
        h.consumer._committed_offset[TP0] = 10
        guard.start({TP0: 10})
        task = asyncio.create_task(h.run())
        await h.deliver((10, GENERATION))
        await _settle(h, 1)
        await h.consumer._add_gap(TP0, 11, 14)
        await h.deliver((15, GENERATION))
        await _settle(h, 2)
        gap = h.committable()
        processed.reset()  # a rebalance: what was decided before must not set a ceiling
        processed.finished({TP0: 99}, processed.epoch - 1)
        await h.close(task)
        return gap, h.committable()

    gap, after_reset = _run(scenario())
    assert gap == {TP0: 11}  # only record 10 was processed; Faust alone: 16
    assert after_reset == {}


def test_first_assignment_without_a_commit_is_not_committed_past_a_head_gap() -> None:
    """Nothing committed yet (a new group): Faust commits past any head gap; the gate from the
    guard's start (the partition's first offset) does not."""

    async def scenario() -> tuple[dict[TP, int], dict[TP, int]]:
        plain = Harness(faust.App("upstream-fresh", broker="kafka://127.0.0.1:1", store="memory://"), _noop)
        task = asyncio.create_task(plain.run())
        await plain.deliver((3, GENERATION), (4, GENERATION))
        await _settle(plain, 2)
        await plain.close(task)
        app, guard, _, (agent, _) = _gated("gate-fresh")
        gated = Harness(app, agent)
        guard.start({TP0: 0})
        task = asyncio.create_task(gated.run())
        await gated.deliver((3, GENERATION), (4, GENERATION))
        await _settle(gated, 2)
        await gated.close(task)
        return plain.committable(), gated.committable()

    upstream, ours = _run(scenario())
    assert upstream == {TP0: 5}  # records 0..2 never reached the agent
    assert ours == {}


def test_a_batch_that_fails_as_a_whole_is_rewound_and_not_committed() -> None:
    """Faust's take_events acks a batch even when the agent raised; the worker rewinds it instead
    and the gate's ceiling stays where it was (CloudProcessor.handle, the real one)."""

    async def scenario() -> tuple[list[tuple[Any, int]], int | None, int | None, int | None]:
        settings = Settings()
        proc = build_app(settings, Registry()).cloud_processor  # type: ignore[attr-defined]
        tp = TP(settings.kafka.events_topic, 0)
        sought: list[tuple[Any, int]] = []

        async def seek(tp: Any, offset: int) -> None:
            sought.append((tp, offset))

        async def fails(live: list[Any]) -> None:
            raise RuntimeError("the alerts topic is gone")

        async def works(live: list[Any]) -> None:
            return None

        proc.seek, proc._handle = seek, fails
        proc.guard.start({tp: 10})
        batch = [SimpleNamespace(message=SimpleNamespace(tp=tp, offset=o)) for o in (10, 11)]
        with pytest.raises(RuntimeError):
            await proc.handle(batch)
        failed = (proc.guard.expected(tp), proc.processed.ceiling(tp))
        proc._handle = works
        await proc.handle(batch)  # the rewind brings them again
        return sought, *failed, proc.processed.ceiling(tp)

    sought, expected, ceiling_after_failure, ceiling_after_retry = _run(scenario())
    assert sought == [(TP(Settings().kafka.events_topic, 0), 10)]
    assert expected == 10 and ceiling_after_failure is None
    assert ceiling_after_retry == 12
