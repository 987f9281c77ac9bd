"""The uplink's messages in flight: taken from MQTT and not yet finished with (acked after Kafka
did, or given back to the broker), with the per-flush counts.

Separate from :mod:`pipeline.bridge.uplink`, which wires paho and kafka-python to it, because this
is the state all three of the uplink's threads share under one lock: paho's network thread adds to
the inbox, the worker takes batches and requeues them, kafka-python's I/O thread settles sends or
schedules retries. Keeping every rule about that state next to its lock keeps each access under
it; the few reads without it (``stopping``, ``gen``, ``gen_inflight``, :attr:`InFlight.retries`)
say why that is safe where they are read.

Connection generations: paho message ids belong to one connection. Each (re)connect or
disconnect bumps ``gen``; a message taken on an older connection is never acked (the broker
redelivers it on the new one, which may duplicate it in Kafka) and, if not yet sent, is dropped.

Per-message work is counted in plain fields under this lock (taken anyway) and flushed to the
metrics registry with the acks, not per message: under load the registry's lock, label sorting
and sorted-sample inserts cost as much as the hand-off itself (profile in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.operators.schema import Event, Rejected

# The uplink's log: its lines keep the logger name they had before this module was split out.
log = logging.getLogger("pipeline.bridge.uplink")

RETRY_BACKOFF_MIN_S = 0.2
RETRY_BACKOFF_MAX_S = 5.0


@dataclass(slots=True)
class Taken:
    order: int  # arrival order, so retries go out oldest first
    gen: int  # connection generation the message arrived on
    mid: int
    qos: int
    topic: str
    payload: bytes
    received: float  # monotonic
    attempts: int = 0
    not_before: float = 0.0
    event: Event | None = field(default=None)


# At most this many latency samples go to the registry per flush (the newest ones): enough for
# its quantiles, and a flood does not turn every flush into thousands of sorted inserts.
LATENCY_SAMPLES_PER_FLUSH = 200


@dataclass(slots=True)
class Counts:
    """What happened since the last flush to the registry (guarded by the :class:`InFlight` lock)."""

    received: int = 0
    redelivered: int = 0
    produced: int = 0
    unacked_stale: int = 0
    produce_errors: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # by reason
    latencies: list[float] = field(default_factory=list)  # ring of LATENCY_SAMPLES_PER_FLUSH
    latencies_seen: int = 0

    def latency(self, seconds: float) -> None:
        if len(self.latencies) < LATENCY_SAMPLES_PER_FLUSH:
            self.latencies.append(seconds)
        else:
            self.latencies[self.latencies_seen % LATENCY_SAMPLES_PER_FLUSH] = seconds
        self.latencies_seen += 1


class InFlight:
    """The inbox, the retry heap, connection generations and counts, under one lock.

    ``stopping``, ``gen`` and ``gen_inflight`` are written under the lock only; the uplink reads
    them without it where a stale value only delays a decision by one message or one loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # Bounded by the MQTT Receive Maximum (bridge.max_inflight): the broker sends no more
        # until we ack, and we ack only after Kafka did; where a broker overshoots it, reading
        # pauses (Uplink._read_paused). Counted: bridge_uplink_inflight.
        self._inbox: deque[Taken] = deque()
        self._retry: list[tuple[int, Taken]] = []  # heap by arrival order
        self._order = itertools.count()
        self.gen = 0
        self._connected = False
        self._inflight = 0
        self.gen_inflight = 0  # of _inflight, those taken on the current connection
        self.stopping = False
        self._worker_idle = False  # the worker waits on _wake: a new message must notify it
        self._counts = Counts()
        self._failing_since: float | None = None

    # ------------------------------------------------------------------ paho thread

    def connected(self) -> int:
        """A new connection: a new generation (returned); nothing taken on it yet."""
        with self._lock:
            self.gen += 1
            self.gen_inflight = 0
            self._connected = True
            return self.gen

    def disconnected(self) -> None:
        with self._wake:
            self.gen += 1
            self.gen_inflight = 0
            self._connected = False
            self._wake.notify_all()

    def add(self, mid: int, qos: int, dup: bool, topic: str, payload: bytes) -> None:
        item = Taken(order=next(self._order), gen=0, mid=mid, qos=qos, topic=topic, payload=payload,
                     received=time.monotonic())  # fmt: skip
        with self._lock:
            item.gen = self.gen
            self._inbox.append(item)
            self._inflight += 1
            self.gen_inflight += 1
            self._counts.received += 1
            if dup:
                self._counts.redelivered += 1
            # A busy worker takes this message with the rest of the inbox when it comes back;
            # waking it per message cost a futex wake and a thread switch each.
            if self._worker_idle:
                self._wake.notify()

    # ------------------------------------------------------------------ worker thread

    def stop(self) -> None:
        """Stop handing out messages; a waiting :meth:`take` returns at once."""
        with self._wake:
            self.stopping = True
            self._wake.notify_all()

    def take(self, until: float) -> tuple[list[Taken], bool]:
        """What to send next: the oldest due retry, or else the whole inbox taken under one lock;
        an empty list at ``until``; True once stopping."""
        with self._wake:
            while not self.stopping:
                now = time.monotonic()
                wait = until - now
                if self._retry:
                    # Retries go one at a time (they are rare: Kafka failing), oldest first.
                    head = self._retry[0][1]
                    if head.gen != self.gen:
                        heapq.heappop(self._retry)
                        self._release(head)
                        continue
                    if head.not_before <= now:
                        heapq.heappop(self._retry)
                        return [head], False
                    # Hold new messages while a retry waits: Kafka is likely down, and order matters.
                    wait = min(wait, head.not_before - now)
                elif self._inbox:
                    batch: list[Taken] = []
                    for item in self._inbox:
                        if item.gen != self.gen and item.qos > 0:
                            self._release(item)  # its connection is gone; the broker redelivers it
                        else:
                            batch.append(item)
                    self._inbox.clear()
                    if batch:
                        return batch, False
                    continue
                if wait <= 0:
                    return [], False
                self._wait(wait)
            return [], True

    def _wait(self, timeout: float) -> None:
        """Sleep on ``_wake`` (lock held) until notified or ``timeout``."""
        self._worker_idle = True
        try:
            self._wake.wait(timeout)
        finally:
            self._worker_idle = False

    @property
    def retries(self) -> int:
        """Messages waiting for a retry (no lock: only the worker takes from the heap, so a count
        that grew since the worker last looked means a send failed)."""
        return len(self._retry)

    def requeue(self, items: list[Taken]) -> None:
        """Back to the front of the inbox, in order, as if they had never been taken."""
        with self._lock:
            self._inbox.extendleft(reversed(items))

    def take_counts(self) -> tuple[Counts, int]:
        """The counts since the last call (then reset) and the messages in flight now."""
        with self._lock:
            c, self._counts = self._counts, Counts()
            return c, self._inflight

    # ------------------------------------------------------------------ kafka I/O thread

    def settle(self, item: Taken, result: Event | Rejected, ack: Callable[[int, int], object]) -> None:
        """Kafka has ``item``'s record: ``ack`` it to MQTT (under the lock, so the connection it
        arrived on cannot change in between) unless that connection is gone, and count it."""
        with self._lock:
            acked = item.qos > 0 and item.gen == self.gen and self._connected
            if acked:
                ack(item.mid, item.qos)
            self._release(item)
            if self._failing_since is not None:
                log.info("uplink: Kafka accepts records again")
                self._failing_since = None
            c = self._counts
            if isinstance(result, Event):
                c.produced += 1
            else:
                c.dead_letters[result.reason] = c.dead_letters.get(result.reason, 0) + 1
            if not acked and item.qos > 0:
                c.unacked_stale += 1
            c.latency(time.monotonic() - item.received)

    def failed(self, item: Taken, exc: BaseException) -> None:
        with self._lock:
            self._counts.produce_errors += 1
        self.retry(item, exc)

    def retry(self, item: Taken, exc: BaseException | None = None) -> None:
        with self._wake:
            if self.stopping or item.gen != self.gen:
                self._release(item)  # not acked: the broker sends it again
                return
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.warning("uplink: Kafka send failed (%s); holding MQTT acks and retrying", exc)
            item.attempts += 1
            backoff = min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_MIN_S * 2 ** min(item.attempts, 10))
            item.not_before = time.monotonic() + backoff
            heapq.heappush(self._retry, (item.order, item))
            self._wake.notify()

    # ------------------------------------------------------------------ any thread

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight

    def failing_for_more_than(self, seconds: float) -> bool:
        """Kafka sends have failed, without one success since, for longer than ``seconds``."""
        with self._lock:
            return self._failing_since is not None and time.monotonic() - self._failing_since > seconds

    # ------------------------------------------------------------------ helpers (lock held)

    def _release(self, item: Taken) -> None:
        self._inflight -= 1
        if item.gen == self.gen:
            self.gen_inflight -= 1
