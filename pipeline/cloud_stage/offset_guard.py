"""Check that the worker sees every offset of each events partition, in order, and rewind if not.

Why this exists: faust-streaming 0.15.3 fetches a worker's stream partitions while it is still
seeking them to their committed offsets after a (re)start or rebalance. Records fetched before
that seek can be skipped by the stream (and acknowledged) or dropped by the consumer's
read-offset check, and the fetch after the seek does not always bring them back. Seen here under
CPU load (``tests/cloud_stage/test_worker_restarts.py``): a track's first event never reached
the worker, so its alert came with the wrong id or not at all, and twice a partition stopped
delivering altogether while records waited in Kafka.

The guard is plain bookkeeping, with no Faust in it (the worker wires it in):

- ``expected[tp]`` is the next offset the worker must see: the committed offset after Faust's
  seek, then ``offset + 1`` of each record handled.
- A record *beyond* ``expected`` means records were lost in between: it is not processed, and
  the partition is rewound (seeked) to ``expected`` so Kafka delivers the missing ones again.
  A gap that survives ``max_rewinds`` rewinds is real (a compacted or transactional topic, or
  retention deleted the records) and is accepted, loudly.
- A record *below* ``expected`` is a replay (after a rewind or a restart): processed as usual;
  the seen-set makes it harmless.
- A partition that has records waiting (high watermark beyond ``expected``) but delivered
  nothing for ``stall_s`` is rewound too, at most ``max_rewinds`` times in a row (a transaction
  marker also lifts the high watermark, and no record will ever come for it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["process", "skip"]


@dataclass
class _Partition:
    expected: int | None = None  # next offset the worker must see; None: take the first one seen
    rewinds: int = 0  # rewinds made for the current gap
    progress_at: float = 0.0  # clock of the last record handled (or of the start)
    rewound_at: float | None = None


@dataclass
class GapReport:
    """Gaps found in one batch: what to rewind, and gaps given up on (after ``max_rewinds``)."""

    rewind_to: dict[Hashable, int] = field(default_factory=dict)  # tp -> offset to seek to
    accepted: list[tuple[Hashable, int, int]] = field(default_factory=list)  # (tp, first missing, first seen)


class OffsetGuard:
    def __init__(
        self, max_rewinds: int = 5, stall_s: float = 10.0, settle_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.max_rewinds = max_rewinds
        self.stall_s = stall_s
        self.settle_s = settle_s
        self._clock = clock
        self._parts: dict[Hashable, _Partition] = {}

    def reset(self) -> None:
        """Forget everything (partitions were revoked or assigned)."""
        self._parts.clear()

    def start(self, offsets: dict[Hashable, int | None]) -> None:
        """The consumer sought these partitions to their committed offsets (None: no commit yet)."""
        now = self._clock()
        for tp, offset in offsets.items():
            part = self._parts.setdefault(tp, _Partition())
            # Records handled before the seek do not count: the committed offset is where Kafka
            # resumes, so anything after it that was skipped on the way shows up as a gap.
            if offset is not None and offset >= 0:
                part.expected = offset
            part.rewinds, part.rewound_at, part.progress_at = 0, None, now

    def expected(self, tp: Hashable) -> int | None:
        part = self._parts.get(tp)
        return part.expected if part else None

    def decide(self, tp: Hashable, offset: int, report: GapReport) -> Decision:
        """Whether to process the record at ``offset`` now; gaps go to ``report``.

        Call it for every record of a batch, in order, before processing any: a processed record
        moves ``expected`` on at once, so the next record of the partition is judged against it.
        """
        part = self._parts.setdefault(tp, _Partition(progress_at=self._clock()))
        if part.expected is None or offset == part.expected:
            part.expected, part.rewinds = offset + 1, 0
            return "process"
        if offset < part.expected:
            return "process"  # a replay: the seen-set drops what was done already
        # offset > expected: records part.expected .. offset-1 never reached the worker
        if tp in report.rewind_to or self._settling(part):
            return "skip"  # a rewind is on its way; what is skipped now comes again after it
        if part.rewinds < self.max_rewinds:
            report.rewind_to[tp] = part.expected
            return "skip"
        report.accepted.append((tp, part.expected, offset))
        part.expected, part.rewinds = offset + 1, 0
        return "process"

    def _settling(self, part: _Partition) -> bool:
        # Records fetched before a rewind can still come out of the consumer's buffers for a
        # moment; they must not count as a new gap (and use up max_rewinds) while it settles.
        return part.rewound_at is not None and self._clock() - part.rewound_at < self.settle_s

    def restart_at(self, tp: Hashable, offset: int) -> None:
        """Records from ``offset`` on must be seen again (their batch failed): expect ``offset``."""
        part = self._parts.setdefault(tp, _Partition())
        part.expected, part.rewinds = offset, 0

    def progressed(self, tp: Hashable) -> None:
        """Records of ``tp`` were handled (for the stall clock)."""
        self._parts.setdefault(tp, _Partition()).progress_at = self._clock()

    def rewound(self, tp: Hashable) -> None:
        """The caller sought ``tp`` back to :meth:`expected`."""
        part = self._parts.setdefault(tp, _Partition())
        part.rewinds += 1
        part.rewound_at = part.progress_at = self._clock()

    def stalled(self, highwaters: dict[Hashable, int | None]) -> dict[Hashable, int]:
        """Partitions with records waiting but no progress for ``stall_s``: tp -> offset to seek to."""
        now = self._clock()
        out: dict[Hashable, int] = {}
        for tp, hw in highwaters.items():
            part = self._parts.get(tp)
            if part is None or part.expected is None or hw is None or hw <= part.expected:
                continue
            if part.rewinds >= self.max_rewinds:
                continue  # nothing came after max_rewinds seeks: e.g. only transaction markers remain
            if now - part.progress_at >= self.stall_s:
                out[tp] = part.expected
        return out


class ProcessedOffsets:
    """The commit gate's ceilings (:class:`pipeline.compat.faust_app.CommitGate`): per partition,
    every record below the ceiling was processed.

    A batch's marks are the guard's :meth:`OffsetGuard.expected` right after deciding it (every
    record below was handed to the agent, in this batch or in earlier ones, which finished
    first: one agent, batches in order); they count once the batch is processed, and only if no
    (re)assignment came in between (``epoch``).
    """

    def __init__(self, topics: frozenset[str]) -> None:
        self.topics = topics
        self.epoch = 0
        self._done: dict[Hashable, int] = {}

    def reset(self) -> None:
        self.epoch += 1
        self._done.clear()

    def finished(self, marks: Mapping[Any, int | None], epoch: int) -> None:
        if epoch != self.epoch:
            return  # decided before a (re)assignment: the partition may have moved meanwhile
        for tp, mark in marks.items():
            if mark is not None:
                self._done[tp] = max(mark, self._done.get(tp, mark))

    def ceiling(self, tp: Hashable) -> int | None:
        return self._done.get(tp)
