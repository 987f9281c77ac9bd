"""Unstick Faust's table recovery when changelog records stop arriving.

Why this exists: in ``tests/faults`` (scenario ``worker-crash``) under CPU load, about one run in
thirty here (one in two in a full CI run), the surviving worker's recovery after the rebalance
logged "Restoring state from changelog topics..." and then, for as long as we watched (90 s and
more), "No event received for active tp ...-changelog since recovery start" for every non-empty
changelog partition: active offsets stayed at -1, nothing came, recovery never ended, so the
events partitions were never resumed and the remaining alerts never came. faust-streaming
0.15.3 has no timeout for this: it only logs the warning above, forever. Where the records go is
not pinned down. When this watchdog re-sought a stalled worker's changelog partitions (one run of
21 under load, 2026-12-06), every record arrived within 250 ms and the run passed: so they had
been fetched (the consumer's position was past them) and dropped on the way to the recovery, not
withheld by the broker. Candidates in faust 0.15.3: ``Consumer.getmany`` discards a batch while
flow is inactive and then seeks only to committed offsets (changelogs have none); the changelog
queue is cleared on every resume (``clear_on_resume=True``).

What the watchdog does, while Faust is in recovery and some active changelog partition still
has records below its high watermark (``Recovery.active_offsets`` < ``active_highwaters``):

1. no recovered offset moved for ``stall_s``: re-seek those partitions to the next offset they
   need (``active_offsets + 1``) and resume them, so records that were fetched and then lost on
   the way to the recovery are fetched again;
2. still nothing after another ``stall_s`` (or the seek itself hangs): ask the group coordinator
   for a rejoin. The rebalance that follows restarts recovery from scratch (Faust's own
   ``RebalanceAgain`` path) and wakes anything on the consumer thread waiting for an assignment.

Both are safe to repeat. Recovery applies a changelog record only if its offset is above the one
already applied (``Recovery._slurp_changelogs``), so a re-read changes nothing; a rebalance is
what a crashed peer causes anyway (commit gate, offset guard and the seen-set cover the events
topic: at-least-once, alerts deduplicated by id). Each action is logged at ERROR and counted in
``cloud_recovery_kicks_total{action}``.

The decision (:class:`RecoveryWatchdog`) is plain bookkeeping with an injected clock; the
Faust side (:func:`install`) reads the public attributes of ``app.tables.recovery`` and is
fenced to the faust-streaming/aiokafka versions it was verified on (on others it is off).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import faust

from pipeline.compat.faust_app import request_rejoin
from pipeline.compat.versions import Fence
from pipeline.metrics import Registry

log = logging.getLogger(__name__)

FENCES = (
    Fence("faust-streaming", frozenset({"0.15.3"}), "fallback",
          "recovery watchdog: Recovery.in_recovery/active_offsets/active_highwaters, the consumer thread",
          "faust re-seeks, or times out and restarts, a changelog recovery that receives nothing"),
    Fence("aiokafka", frozenset({"0.14.0"}), "fallback", "recovery watchdog: GroupCoordinator.request_rejoin()",
          "faust re-seeks, or times out and restarts, a changelog recovery that receives nothing"),
)  # fmt: skip
SEEK_TIMEOUT_S = 10.0  # a seek through the consumer thread that takes longer is itself a stall

Action = Literal["reseek", "rejoin"]


@dataclass
class Kick:
    """What to do: ``action`` on ``targets`` (changelog tp -> next offset recovery needs)."""

    action: Action
    targets: dict[Hashable, int]


@dataclass
class RecoveryWatchdog:
    """Decides when a recovery is stuck. Call :meth:`check` periodically (every ``stall_s``/4).

    Progress is any change of the recovered offsets. After a kick the next one comes only after
    another ``stall_s`` without progress; the first kick of a stall re-seeks, later ones rejoin.
    """

    stall_s: float
    clock: Callable[[], float] = time.monotonic
    _offsets: dict[Hashable, int | None] | None = None
    _since: float = 0.0
    _kicks: int = 0
    history: list[Kick] = field(default_factory=list)

    def check(
        self, in_recovery: bool, offsets: Mapping[Hashable, int | None], highwaters: Mapping[Hashable, int | None]
    ) -> Kick | None:
        now = self.clock()
        snapshot = dict(offsets)
        if not in_recovery or snapshot != self._offsets:
            # not recovering, a new recovery, or records applied: start the stall clock again
            self._offsets = snapshot if in_recovery else None
            self._since, self._kicks = now, 0
            return None
        waiting: dict[Hashable, int] = {}
        for tp, hw in highwaters.items():
            have = offsets.get(tp)
            have = -1 if have is None else have  # -1: nothing applied yet
            if hw is not None and hw > have:
                waiting[tp] = have + 1
        if not waiting:  # all caught up: Faust ends recovery on its own (5 s idle check)
            self._since = now
            return None
        if now - self._since < self.stall_s:
            return None
        self._since = now
        self._kicks += 1
        kick = Kick("reseek" if self._kicks == 1 else "rejoin", waiting)
        self.history.append(kick)
        return kick


def _request_rejoin(app: faust.App) -> None:
    request_rejoin(app)  # private aiokafka internals: fenced in pipeline.compat.faust_app


async def kick(app: faust.App, k: Kick, metrics: Registry, stall_s: float) -> Action:
    """Carry out ``k``; a re-seek that fails or hangs becomes a rejoin. Returns what was done."""
    metrics.inc("cloud_recovery_kicks_total", help="Stalled table recoveries kicked (re-seek, rejoin).",
                action=k.action)  # fmt: skip
    if k.action == "reseek":
        log.error("table recovery made no progress for %.0f s with changelog records waiting; re-seeking %s",
                  stall_s, k.targets)  # fmt: skip
        consumer = app.consumer
        try:
            consumer.resume_partitions(k.targets)  # type: ignore[arg-type]
            await asyncio.wait_for(consumer.seek_wait(k.targets), SEEK_TIMEOUT_S)  # type: ignore[arg-type]
        except Exception:  # the consumer thread does not answer, or the tp moved away
            log.exception("re-seek of the changelog partitions failed; asking for a rebalance instead")
        else:
            return "reseek"
    else:
        log.error("table recovery still stuck after a re-seek; asking the group coordinator for a rebalance")
    _request_rejoin(app)
    return "rejoin"


def install(app: faust.App, stall_s: float, metrics: Registry) -> RecoveryWatchdog | None:
    """Add the watchdog's timer to ``app`` (None on an unverified faust version: no watchdog)."""
    if not all([f.ok() for f in FENCES]):  # a list: each fence logs its own warning
        return None
    dog = RecoveryWatchdog(stall_s)

    async def _recovery_watchdog() -> None:
        recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
        k = dog.check(bool(recovery.in_recovery), recovery.active_offsets, recovery.active_highwaters)
        if k is not None:
            await kick(app, k, metrics, stall_s)

    app.timer(interval=max(0.5, stall_s / 4))(_recovery_watchdog)
    return dog
