"""Time windows over event time (times are passed in, milliseconds).

* :class:`SlidingDistinct`: how many distinct keys were seen in the last ``window_ms``
  (count rules: "more than N distinct tracks in 60 s"). Bounded by ``max_entries``; when full,
  the key seen longest ago is evicted and counted in ``evicted``.
* :class:`TumblingCounter`: counts per fixed, aligned window, handing back each window when
  time moves past it (per-minute totals for metrics and reports).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SlidingDistinct:
    """Distinct keys whose last sighting is within ``(now - window_ms, ...]``.

    Entries are kept in order of last sighting so expiry pops from the front. Event times that
    arrive slightly out of order are placed correctly (a re-sort, which is rare and bounded by
    ``max_entries``), so counts stay exact.
    """

    def __init__(self, window_ms: int, max_entries: int = 10_000) -> None:
        if window_ms <= 0 or max_entries < 1:
            raise ValueError("window_ms and max_entries must be positive")
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.evicted = 0  # dropped because max_entries was reached

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: str, t_ms: int) -> None:
        """Record a sighting of ``key`` at ``t_ms`` (keeps the latest sighting per key)."""
        prev = self._seen.pop(key, None)
        t_ms = t_ms if prev is None else max(prev, t_ms)
        newest = next(reversed(self._seen.values()), None)
        self._seen[key] = t_ms
        if newest is not None and t_ms < newest:
            self._seen = OrderedDict(sorted(self._seen.items(), key=lambda kv: kv[1]))
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
            self.evicted += 1

    def expire(self, now_ms: int) -> int:
        """Drop keys last seen at or before ``now_ms - window_ms``; returns how many."""
        cutoff = now_ms - self.window_ms
        n = 0
        while self._seen:
            key, t = next(iter(self._seen.items()))
            if t > cutoff:
                break
            del self._seen[key]
            n += 1
        return n

    def count(self, now_ms: int) -> int:
        self.expire(now_ms)
        return len(self._seen)

    def keys(self, now_ms: int) -> list[str]:
        self.expire(now_ms)
        return list(self._seen)

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state (for Faust tables)."""
        return {"items": [[k, t] for k, t in self._seen.items()], "evicted": self.evicted}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None, window_ms: int, max_entries: int = 10_000) -> SlidingDistinct:
        w = cls(window_ms, max_entries)
        if state:
            for k, t in sorted(state.get("items", []), key=lambda kv: int(kv[1])):
                w.add(str(k), int(t))
            w.evicted += int(state.get("evicted", 0))
        return w


def window_start(t_ms: int, size_ms: int, offset_ms: int = 0) -> int:
    """Start of the aligned tumbling window holding ``t_ms`` (windows start at offset + k*size)."""
    if size_ms <= 0:
        raise ValueError("size_ms must be positive")
    return t_ms - (t_ms - offset_ms) % size_ms


@dataclass(frozen=True, slots=True)
class WindowTotal:
    start_ms: int
    end_ms: int  # exclusive
    count: int


class TumblingCounter:
    """Sums amounts per aligned window of ``size_ms``; a window is handed back (closed) when
    an amount arrives for a later window or :meth:`flush` is called. Amounts for an already
    closed window are late: they are dropped and counted in ``late``."""

    def __init__(self, size_ms: int, offset_ms: int = 0) -> None:
        if size_ms <= 0:
            raise ValueError("size_ms must be positive")
        self.size_ms = size_ms
        self.offset_ms = offset_ms
        self._start: int | None = None
        self._count = 0
        self.late = 0

    def add(self, t_ms: int, amount: int = 1) -> list[WindowTotal]:
        start = window_start(t_ms, self.size_ms, self.offset_ms)
        closed: list[WindowTotal] = []
        if self._start is None:
            self._start = start
        elif start < self._start:
            self.late += amount
            return closed
        elif start > self._start:
            closed.append(WindowTotal(self._start, self._start + self.size_ms, self._count))
            self._start, self._count = start, 0
        self._count += amount
        return closed

    def flush(self) -> list[WindowTotal]:
        """Close the open window (at shutdown)."""
        if self._start is None:
            return []
        out = [WindowTotal(self._start, self._start + self.size_ms, self._count)]
        self._start, self._count = None, 0
        return out
