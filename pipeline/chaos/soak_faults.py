"""Carrying out a soak's fault schedule on live components, and recording each fault.

Thread model: one scheduler thread (:meth:`FaultRunner.run`) pops timed actions off a heap;
starting a component again blocks until it reports ready (a Faust worker: seconds), so each
start runs on a thread of its own and reports back through the same heap. A kill may land while
a component is still starting (a follow-up fault): its start then fails, and it is started again.

Each fault becomes a :class:`FaultRecord`: injected at, back in service at (the component's
readiness: a process's ready line, the edge reconnected after a link cut). Wall-clock times
(``time.time()``), so they compare with event and alert timestamps.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pipeline.chaos.soak_schedule import Fault, FaultKind
from pipeline.chaos.tcp_proxy import TcpProxy
from pipeline.local_stack.child_process import ChildProcess
from pipeline.testing import wait_until

log = logging.getLogger(__name__)

RETRY_START_S = 1.0  # a start that failed (killed while starting) is tried again after this
State = Literal["up", "down", "starting"]


class Target:
    """One component a fault takes down and brings back."""

    def __init__(self, kind: FaultKind, name: str) -> None:
        self.kind, self.name = kind, name
        self.state: State = "up"
        self.open: list[FaultRecord] = []  # faults this component has not recovered from yet
        self.lock = threading.Lock()  # state changes: the scheduler thread and this target's start thread
        self.killed_while_starting = False

    def kill(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class ProcessTarget(Target):
    """A child process: SIGKILL, then the same command on the same port and data dir."""

    def __init__(self, kind: FaultKind, name: str, proc: ChildProcess) -> None:
        super().__init__(kind, name)
        self.proc = proc

    def kill(self) -> bool:
        for _ in range(20):  # a start in progress may not have spawned the process yet
            if self.proc.pid is not None:
                self.proc.kill()
                return True
            time.sleep(0.05)
        return False

    def start(self) -> None:
        self.proc.start()


class LinkTarget(Target):
    """The edge's link to Mosquitto (a :class:`TcpProxy`): held (nothing passes, the connection
    stays open: only keep-alives tell), then every connection reset and the link restored; back
    once the edge's publisher is connected again."""

    def __init__(self, proxy: TcpProxy, connected: Callable[[], bool]) -> None:
        super().__init__("link", "edge-link")
        self.proxy, self.connected = proxy, connected

    def kill(self) -> bool:
        self.proxy.hold()
        return True

    def start(self) -> None:
        self.proxy.cut()
        self.proxy.release()
        if not wait_until(self.connected, 120, 0.05):
            raise TimeoutError("edge not reconnected 120 s after the link came back")


@dataclass
class FaultRecord:
    kind: FaultKind
    target: str
    injected_at: float  # time.time()
    follow_up: bool
    back_at: float | None = None

    @property
    def outage_s(self) -> float | None:
        return None if self.back_at is None else self.back_at - self.injected_at


@dataclass
class Skipped:
    fault: Fault
    reason: str


class FaultRunner:
    """Injects ``schedule`` into ``targets`` (by kind) from ``began`` (time.monotonic()) on."""

    def __init__(self, targets: dict[FaultKind, list[Target]], schedule: list[Fault], seed: int) -> None:
        self.targets = targets
        self.schedule = schedule
        self.records: list[FaultRecord] = []
        self.skipped: list[Skipped] = []
        self.start_failures = 0
        self._rng = random.Random(seed ^ 0x5EED)  # noqa: S311 - target choices: reproducible given the same states
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False

    # ------------------------------------------------------------------ heap

    def _at(self, when: float, action: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), action))
            self._cond.notify()

    def run(self, began: float, until: float, give_up_s: float = 600.0, enough: Callable[[], bool] = lambda: True,
            ) -> None:  # fmt: skip
        """Inject faults until ``until`` (monotonic) and ``enough()``; then bring every component
        back and wait (at most ``give_up_s``: a component that does not come back fails the run)."""
        for i, fault in enumerate(self.schedule):
            if fault.follow_up:
                continue  # attached to the fault before it
            after = self.schedule[i + 1] if i + 1 < len(self.schedule) else None
            follow = after if after is not None and after.follow_up else None
            # All of them: the loop below stops injecting at `until` once enough() holds.
            self._at(began + fault.at_s, lambda f=fault, n=follow: self._inject(f, n))  # type: ignore[misc]
        while True:
            with self._cond:
                now = time.monotonic()
                if self._stopping and now > until + give_up_s:
                    raise TimeoutError(f"still down {give_up_s:.0f} s after the last fault: {self.down_now()}")
                out_of_faults = all(getattr(a, "restart", False) for _, _, a in self._heap)
                if now >= until and not self._stopping and (enough() or out_of_faults):
                    until = now
                    self._stopping = True
                    log.info("soak: no more faults (%d injected)", len(self.records))
                    self._heap = [(w, s, a) for w, s, a in self._heap if getattr(a, "restart", False)]
                    heapq.heapify(self._heap)
                if self._stopping and not self._heap and self.all_up():
                    return
                if not self._heap or self._heap[0][0] > now:
                    wait = 0.2 if not self._heap else min(0.2, self._heap[0][0] - now)
                    self._cond.wait(max(wait, 0.0))
                    continue
                _, _, action = heapq.heappop(self._heap)
            action()

    def all_up(self) -> bool:
        return all(t.state == "up" for ts in self.targets.values() for t in ts)

    def down_now(self) -> list[str]:
        return [t.name for ts in self.targets.values() for t in ts if t.state != "up"]

    # ------------------------------------------------------------------ actions

    def _inject(self, fault: Fault, follow: Fault | None, *, restarted: Target | None = None) -> None:
        target = self._choose(fault, restarted)
        if target is None:
            self.skipped.append(Skipped(fault, "no member up"))
            return
        with target.lock:
            was = target.state
            if was == "down" or not target.kill():
                self.skipped.append(Skipped(fault, f"{target.name} was down already"))
                return
            record = FaultRecord(fault.kind, target.name, time.time(), fault.follow_up)
            self.records.append(record)
            target.open.append(record)
            if was == "starting":
                target.killed_while_starting = True  # its start thread starts it again (_start)
            else:
                target.state = "down"
        log.info("soak: %s %s killed%s", fault.kind, target.name, " (while starting)" if was == "starting" else "")
        if was == "starting":
            return
        self._at(time.monotonic() + fault.down_s, self._restart_action(target, follow))

    def _choose(self, fault: Fault, restarted: Target | None) -> Target | None:
        members = self.targets[fault.kind]
        if restarted is not None:
            if fault.same_target or len(members) == 1:
                return restarted if restarted.state != "down" else None
            others = [t for t in members if t is not restarted and t.state == "up"]
            return self._rng.choice(others) if others else None
        preferred = members[fault.target % len(members)]
        if preferred.state == "up":
            return preferred
        up = [t for t in members if t.state == "up"]
        return self._rng.choice(up) if up else None

    def _restart_action(self, target: Target, follow: Fault | None) -> Callable[[], None]:
        def action() -> None:
            target.state = "starting"
            began = time.monotonic()
            threading.Thread(target=self._start, args=(target,), name=f"soak-start-{target.name}", daemon=True).start()
            if follow is not None and not self._stopping:
                self._at(began + follow.delay_s, lambda: self._inject(follow, None, restarted=target))

        action.restart = True  # type: ignore[attr-defined]  # kept when the run stops injecting
        return action

    def _start(self, target: Target) -> None:
        error: str | None = None
        try:
            target.start()
        except Exception as exc:  # killed while starting (a follow-up), or a start that timed out
            error = str(exc)[:200]
        with target.lock:
            if error is None and target.killed_while_starting:
                error = "killed right after it started"
            target.killed_while_starting = False
            if error is None:
                now = time.time()
                for record in target.open:
                    record.back_at = now
                target.open.clear()
                target.state = "up"
            else:
                target.state = "down"
        if error is not None:
            self.start_failures += 1
            log.info("soak: %s did not start (%s); again in %.0f s", target.name, error, RETRY_START_S)
            self._at(time.monotonic() + RETRY_START_S, self._restart_action(target, None))
            return
        with self._cond:
            self._cond.notify()
