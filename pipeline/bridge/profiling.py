"""``pipeline bridge --profile FILE``: cProfile over every thread, written when the bridge stops.

The bridge's work is spread over threads it does not start itself (paho's network thread,
kafka-python's I/O thread), and cProfile only sees the thread that enabled it; so a profiler is
enabled in each thread as it starts (``threading.setprofile``) and the main thread's too, and
their stats are merged into one ``pstats`` file at shutdown (read it with
``python -m pstats FILE`` or snakeviz). Deterministic profiling slows Python calls down about
2x and so overstates call-heavy code; for a sampling profile of the live process use py-spy
(``py-spy record --gil --threads --pid PID``), as benchmarks/RESULTS.md does.
"""

from __future__ import annotations

import cProfile
import logging
import pstats
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class ThreadProfiles:
    """Start with :meth:`start` before the threads to profile are created; :meth:`dump` at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: list[cProfile.Profile] = []

    def _new(self) -> cProfile.Profile:
        profile = cProfile.Profile()
        with self._lock:
            self._profiles.append(profile)
        return profile

    def _thread_hook(self, frame: FrameType, event: str, arg: Any) -> None:
        # Runs once, in the new thread, as its first profile event: replace this hook with a
        # profiler of the thread's own.
        sys.setprofile(None)
        self._new().enable()

    def start(self) -> None:
        threading.setprofile(self._thread_hook)
        self._new().enable()

    def dump(self, path: Path) -> None:
        threading.setprofile(None)
        with self._lock:
            profiles = list(self._profiles)
        profiles[0].disable()  # the main thread's; the others stop with their threads or the process
        stats = pstats.Stats(profiles[0])
        for p in profiles[1:]:
            stats.add(p)
        path.parent.mkdir(parents=True, exist_ok=True)
        stats.dump_stats(str(path))
        log.info("bridge: profile of %d threads written to %s", len(profiles), path)
