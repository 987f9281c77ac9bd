"""Runners of one model file shared by the cameras of a node, grown only when they are busy.

A runner is a LiteRT interpreter or an OpenVINO infer request: not thread-safe, one caller at a
time. A detect call leases one from the node's :class:`InterpreterPool` and waits while all are
busy. K single-threaded runners for K cores serve any number of cameras, so N cameras cost K
model copies and activation arenas instead of N, and never run more inference threads than cores
(benchmarks/RESULTS.md, scale).

**Why it grows instead of starting full.** Each extra LiteRT interpreter costs ~45 MB at 384 px
(~65 MB at 512). A node whose cameras keep one interpreter busy half the time gains nothing from
a second one but pays for it: 4 cameras at 5 fps and 384 px use ~52 % of one interpreter here,
and peak RSS is 244 MB with one vs 288 MB with two. So the pool starts with one runner and adds
one (up to ``size``) when, over a window of ``window_s``, its runners were busy at least
``grow_at`` of the time *and* a lease found none free. 0.75 is where waiting starts to dominate:
a single server at utilisation u makes a request wait ~u/(2(1-u)) service times on average (M/D/1),
1.5 service times at 0.75, against a detection interval of ~8 service times (200 ms / 26 ms). It
never shrinks: load that needed a runner once comes back (cameras are steady), and releasing
native memory mid-run buys little.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Union

from pipeline.errors import ModelError

if TYPE_CHECKING:
    from pipeline.edge_stage.detectors.openvino_centernet import OpenVinoRunner
    from pipeline.edge_stage.detectors.tflite_centernet import LiteRtRunner

log = logging.getLogger(__name__)

Runner = Union["LiteRtRunner", "OpenVinoRunner"]


def runner_factory(model_path: Path, num_threads: int, runtime: str, precision: str) -> Callable[[], Runner]:
    """A maker of runners of one model file on ``runtime`` (OpenVINO: the model is compiled once
    here, its weights held once, and each call makes one more infer request; LiteRT: each call
    loads one more interpreter)."""
    if runtime == "openvino":
        from pipeline.edge_stage.detectors.openvino_centernet import OpenVinoCenterNet

        return OpenVinoCenterNet(model_path, num_threads, precision).runner
    if runtime != "litert":
        raise ModelError(f"unknown detector runtime {runtime!r} (litert or openvino)")
    from pipeline.edge_stage.detectors.tflite_centernet import LiteRtRunner

    return lambda: LiteRtRunner(model_path, num_threads)


class InterpreterPool:
    """Up to ``size`` runners of one model file, shared through :meth:`shared` by the camera
    threads of a node and released when the last user closes; starts with one, grows when busy."""

    _shared: dict[tuple[str, int, int, str, str], InterpreterPool] = {}
    _shared_lock = threading.Lock()

    def __init__(
        self,
        model_path: Path,
        size: int,
        num_threads: int = 1,
        runtime: str = "litert",
        precision: str = "f32",
        *,
        grow_at: float = 0.75,
        window_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one runner, not {size}")
        self.model_path, self.size, self.num_threads = model_path, size, num_threads
        self.grow_at, self.window_s, self._clock = grow_at, window_s, clock
        self._make = runner_factory(model_path, num_threads, runtime, precision)
        self._free: queue.Queue[Runner] = queue.Queue()
        self._lock = threading.Lock()
        self._first = self._make()  # loads now: a bad model fails here, at start
        self._free.put(self._first)
        self.live = 1  # runners made so far (<= size)
        self._window_start = clock()
        self._busy_s = 0.0  # leased time in the current window, all runners together
        self._grow_due = False
        self.users = 0
        self.key = (str(model_path), size, num_threads, runtime, precision)

    @classmethod
    def shared(
        cls, model_path: Path, size: int, num_threads: int = 1, runtime: str = "litert", precision: str = "f32"
    ) -> InterpreterPool:
        """The node-wide pool for this file, size and runtime (created on first use); counts the new user."""
        key = (str(model_path), size, num_threads, runtime, precision)
        with cls._shared_lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = cls(model_path, size, num_threads, runtime, precision)
            pool.users += 1
            return pool

    def release_user(self) -> None:
        with self._shared_lock:
            self.users -= 1
            if self.users <= 0 and self._shared.get(self.key) is self:
                del self._shared[self.key]

    def any(self) -> Runner:
        """A runner to read the model's size from (not to run)."""
        return self._first

    @contextmanager
    def lease(self) -> Iterator[Runner]:
        runner = self._take()
        start = self._clock()
        try:
            yield runner
        finally:
            end = self._clock()
            self._free.put(runner)
            self._account(end - start, end)

    def _take(self) -> Runner:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = self._grow_due and self.live < self.size
            if grow:
                self._grow_due = False
                self.live += 1
        if not grow:
            return self._free.get()
        try:
            runner = self._make()  # in this camera's thread, once: ~0.1-0.3 s
        except Exception:  # out of memory, a runtime error: growing must never stop a camera
            with self._lock:
                self.live -= 1
            log.exception("detector pool: could not add a runner; staying at %d", self.live)
            return self._free.get()
        log.info("detector pool: busy >= %.0f%% of %d runner(s): added one (%d of at most %d) for %s",
                 100 * self.grow_at, self.live - 1, self.live, self.size, self.model_path.name)  # fmt: skip
        return runner

    def _account(self, busy_s: float, now: float) -> None:
        """Adds one lease to the window; at the window's end, decides whether the next wait grows the pool."""
        with self._lock:
            self._busy_s += busy_s
            span = now - self._window_start
            if span < self.window_s:
                return
            utilisation = self._busy_s / (span * self.live)
            self._grow_due = utilisation >= self.grow_at and self.live < self.size
            self._window_start, self._busy_s = now, 0.0
