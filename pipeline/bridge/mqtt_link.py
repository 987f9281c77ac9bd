"""PUBACK tracking for the bridge (clients come from :mod:`pipeline.mqtt_client`).

paho runs callbacks on its network thread. :class:`PubackTracker` records PUBACKs there and lets
another thread wait for them. It never holds its lock while calling into paho: paho calls
``on_publish`` with its own out-message lock held, so the reverse order would deadlock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pipeline.mqtt_client import failed


class PubackTracker:
    """Which of our QoS 1 publishes the broker has acknowledged (hook :meth:`on_publish`)."""

    def __init__(self, keep_s: float = 120.0) -> None:
        self._cond = threading.Condition()
        self._done: dict[int, float] = {}  # mid -> when PUBACK arrived
        # mids whose waiter gave up: their late PUBACK must not mark a later reuse of the mid.
        self._abandoned: set[int] = set()
        self._keep_s = keep_s

    def on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # A failure reason (e.g. 135 not authorized) is not a delivery: leave it pending.
        if failed(reason_code):
            return
        with self._cond:
            if mid in self._abandoned:
                self._abandoned.discard(mid)
                return
            now = time.monotonic()
            self._done[mid] = now
            if len(self._done) > 70_000:  # mids wrap at 65535; drop stale entries
                self._done = {m: t for m, t in self._done.items() if now - t < self._keep_s}
            self._cond.notify_all()

    def wait(self, mids: set[int], timeout_s: float) -> set[int]:
        """Block until every mid is acknowledged or the timeout; returns those still pending."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                pending = {m for m in mids if m not in self._done}
                remaining = deadline - time.monotonic()
                if not pending or remaining <= 0:
                    for m in mids - pending:
                        del self._done[m]
                    self._abandoned |= pending
                    return pending
                self._cond.wait(min(remaining, 0.5))
