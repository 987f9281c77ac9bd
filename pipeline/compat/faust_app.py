"""faust-streaming internals we depend on, in one place: the Faust app class of the cloud stage.

Verified on faust-streaming 0.15.3 with aiokafka 0.14.0 (:data:`FAUST`, :data:`AIOKAFKA`); on
any other version :func:`check` refuses to start (there is no public path for the commit gate).
``tests/compat/test_private_symbols.py`` checks every private name used here still exists.

What is changed, and why:

1. **Offsets are committed only after our agent processed the records** (:class:`CommitGate`).
   faust-streaming 0.15.3 commits "the first run of acknowledged offsets" and lets records the
   agent never saw into it: ``Consumer._new_offset``'s head-gap check is off by one
   (``min(acked) - committed > 1``, the committed offset being the next one to read), so one
   missing record at the head is committed past, and with nothing committed yet (or 0) any head
   gap is; the fetch loop counts a jump in offsets as acknowledged (``Consumer._add_gap``, meant
   for compacted topics); ``take_events`` acknowledges its batch in a ``finally`` even when the
   agent raised; and the pure-Python stream acknowledges a record it skips. A record fetched under
   the previous consumer generation right after a rebalance is skipped by the stream (the Cython
   one, installed here, leaves it unacknowledged: a hole at the head), and the next commit passed
   it; a crash then lost it (docs/faults.md, findings 9 and 10). For the gated topics (the events
   topic) the commit offset is instead the gate's :meth:`CommitGate.ceiling`: every record below
   it was handled by the agent, in order (the offset guard's bookkeeping). Faust's own ack lists
   for those partitions are emptied at each commit (they are not used, and would grow) and its
   gap marks are not made.
2. **Where the post-assignment seek put each partition** is reported to ``seek_listeners``
   (``Consumer.seek_to_committed``); a partition with no commit yet reports its first offset
   (``earliest_offsets``) so that the guard knows where the log starts.
3. **The consumer's fetch wait** (``fetch_max_wait_ms``, hard-coded to 1500 ms in Faust) is set
   from ``cloud.consumer_fetch_max_wait_ms`` (aiokafka's ``AIOKafkaConsumer._fetch_max_wait_ms``
   before ``start()``): Tansu 0.6 waits out the full time on multi-partition fetches (483 ms
   median delivery for 4 partitions vs 13 ms with a 100 ms wait).
4. **The current event** for table writes (:func:`current_event`): ``faust.streams._current_event``
   is set per event of a ``take_events`` batch, so each table write goes to its partition.
5. **No commit of a gated topic before the table writes are acknowledged** (:meth:`_Consumer._commit_offsets`).
   Faust flushes its producer before committing, but ``ProducerBuffer.flush()`` returns as soon as
   one record takes more than 0.1 s to be handed to aiokafka (``flush_atmost``: ``wait_for(...,
   timeout=0.1)``, then ``return``), with the rest still queued, and it never counts the record
   being handed over. With single-record batches (``cloud.single_record_batches``) each changelog
   record of a partition waits for the previous one's produce round trip, so a slow broker is
   enough. The commit then passed events whose ``rule_state``/``incidents``/``seen`` writes were
   lost with a crash: their later events (not committed) fired the alert again with a new id.
   Every record sent through ``send_soon`` (table changelogs) is now tracked until Kafka
   acknowledges it, and a commit of a gated topic waits up to :data:`COMMIT_SEND_WAIT_S` for
   them, or is skipped (the next commit tries again; nothing is lost, events are replayed).

Removable when: faust-streaming commits only offsets its agents consumed (the head-gap
off-by-one is upstream issue faust-streaming/faust#606, open, with fix PR #707, open, as of
2026-12; the gap marks and ``take_events``' acks are not reported), offers a consumer fetch-wait
setting, sets the current event for each event of ``take_events``, and flushes its producer to
the last acknowledgement before a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import faust
from faust import streams as faust_streams
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT

from pipeline.compat.versions import Fence

log = logging.getLogger(__name__)

FAUST = Fence(
    "faust-streaming", frozenset({"0.15.3"}), "refuse",
    "commit gate, seek report, fetch wait, current event",
    "faust commits only offsets its agents consumed (faust-streaming/faust#606, PR #707) and has a fetch-wait "
    "setting",
)  # fmt: skip
AIOKAFKA = Fence(
    "aiokafka", frozenset({"0.14.0"}), "refuse", "AIOKafkaConsumer._fetch_max_wait_ms before start()",
    "faust passes a fetch wait setting to aiokafka",
)  # fmt: skip

# Private names used here, checked by tests/compat (object, attribute).
PRIVATE_SYMBOLS: tuple[tuple[Any, str], ...] = (
    (faust_streams, "_current_event"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer"),
    (faust_aiokafka.Consumer, "_new_consumer_thread"),
    (faust_aiokafka.Consumer, "_filter_committable_offsets"),
    (faust_aiokafka.Consumer, "_new_offset"),
    (faust_aiokafka.Consumer, "_add_gap"),
    (faust_aiokafka.Consumer, "_should_commit"),
    (faust.App, "_new_transport"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_ensure_consumer"),
    (faust_aiokafka.Consumer, "_commit_offsets"),
)


def check() -> None:
    """Start-up check: raises :class:`~pipeline.compat.versions.UnverifiedLibrary` on another version."""
    FAUST.ok()
    AIOKAFKA.ok()


def request_rejoin(app: faust.App) -> None:
    """Make the app's Kafka consumer rejoin its group (a rebalance), from the app's own loop.

    Used by the cloud stage's recovery watchdog (pipeline/cloud_stage/recovery_watchdog.py) when a
    table recovery is stuck. aiokafka has no public call for it: ``GroupCoordinator.request_rejoin()``
    resolves a future of the consumer thread's loop, so it is scheduled on that loop.
    """
    thread = app.consumer._thread  # type: ignore[attr-defined]
    coordinator = thread._ensure_consumer()._coordinator
    thread.thread_loop.call_soon_threadsafe(coordinator.request_rejoin)


class CommitGate(Protocol):
    """What the agent has processed: the consumer commits no further than this."""

    topics: frozenset[str]

    def ceiling(self, tp: TP) -> int | None:
        """Every record of ``tp`` below this offset was processed (None: nothing to commit)."""


@contextlib.contextmanager
def current_event(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` Faust's current event, so table writes go to its partition's changelog.

    Needed because we take events in batches (``stream.take_events``), where Faust's own
    current event is the last one of the batch, not the one being processed.
    """
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            # aiokafka reads this attribute when start() builds its Fetcher.
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _gate(self) -> CommitGate | None:
        gate: CommitGate | None = getattr(self.app, "commit_gate", None)
        return gate

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """Faust's seek after an assignment; tells the app where each partition now resumes."""
        offsets: dict[Any, Any] = dict(await super().seek_to_committed())
        gate = self._gate()
        fresh = [tp for tp, off in offsets.items() if (off is None or off <= 0) and gate and tp.topic in gate.topics]
        if fresh:
            try:  # no commit yet: the partition resumes at its first record
                offsets.update(
                    {tp: off for tp, off in (await self.earliest_offsets(*fresh)).items() if off is not None}
                )
            except Exception as exc:  # the guard then takes the first record it sees
                log.warning("first offsets of %s unknown (%r)", fresh, exc)
        for listener in getattr(self.app, "seek_listeners", ()):
            listener(dict(offsets))
        return offsets

    async def _commit_offsets(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        gate = self._gate()
        producer = self.app.producer
        if gate is not None and isinstance(producer, _Producer) and any(tp.topic in gate.topics for tp in offsets):
            await producer.flush()  # faust's own flush: may leave records queued (see the module, 5.)
            if not await producer.sends.wait(COMMIT_SEND_WAIT_S):
                log.info("commit postponed: %d table records not acknowledged yet", producer.sends.pending)
                return False
        return bool(await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction))

    def _filter_committable_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        gate = self._gate()
        tps = list(tps)
        if gate is None:
            return dict(super()._filter_committable_offsets(tps))
        out = dict(super()._filter_committable_offsets([tp for tp in tps if tp.topic not in gate.topics]))
        for tp in tps:
            if tp.topic not in gate.topics:
                continue
            # Faust's ack bookkeeping is not what we commit by: empty it (in place: the stream
            # code holds the lists) so it does not grow.
            self._acked[tp].clear()
            self._acked_index[tp].clear()
            ceiling = gate.ceiling(tp)
            if ceiling is not None and self._should_commit(tp, ceiling):
                out[tp] = ceiling
        return out

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        gate = self._gate()
        if gate is not None and tp.topic in gate.topics:
            return  # a jump in a gated topic is a hole to fill (the offset guard), not a commit
        await super()._add_gap(tp, offset_from, offset_to)


COMMIT_SEND_WAIT_S = 1.0  # how long a commit waits for table writes to be acknowledged (then skipped)


class SendTracker:
    """Futures of records handed to the producer, until each is done (acknowledged or failed)."""

    def __init__(self) -> None:
        self._futures: set[asyncio.Future[Any]] = set()

    def add(self, fut: asyncio.Future[Any]) -> None:
        self._futures.add(fut)
        fut.add_done_callback(self._futures.discard)  # result or error: Topic._on_published

    @property
    def pending(self) -> int:
        return sum(1 for f in self._futures if not f.done())

    async def wait(self, timeout_s: float) -> bool:
        """Whether every record added so far is done, waiting up to ``timeout_s`` for them."""
        pending = [f for f in self._futures if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
        return all(f.done() for f in pending)


class _Producer(faust_aiokafka.Producer):
    """Tracks every ``send_soon`` record (table changelogs) until Kafka acknowledges it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sends = SendTracker()

    def send_soon(self, fut: Any) -> None:
        self.sends.add(fut)
        super().send_soon(fut)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
    Producer = _Producer


class PipelineFaustApp(faust.App):
    """``faust.App`` with the commit gate, seek listeners and the consumer's fetch wait."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int | None = None, **kwargs: Any) -> None:
        check()
        self.fetch_max_wait_ms = fetch_max_wait_ms
        # Called with {tp: committed offset} each time Faust seeks its partitions after an
        # assignment (see pipeline/cloud_stage/offset_guard.py).
        self.seek_listeners: list[Callable[[dict[Any, int]], None]] = []
        self.commit_gate: CommitGate | None = None
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
