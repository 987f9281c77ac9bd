"""Duplicate suppression: event ids already processed, and alert incidents in cooldown.

Both structures are bounded (by age and by size, evictions counted) and serialise to plain
JSON-able dicts so the cloud can keep them in Faust tables and survive a restart. Times are
passed in (epoch milliseconds, normally the event's capture time, so that reprocessing the
same events makes the same decisions).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

_STATE_VERSION: Final = 1


class SeenSet:
    """Ids seen in the last ``ttl_ms`` (counted from each id's *first* sighting).

    MQTT QoS 1 and outbox replays deliver some events twice; the duplicate normally arrives
    soon after the original, so a time-bounded memory is enough and keeps state small.
    """

    def __init__(self, max_items: int, ttl_ms: int) -> None:
        if max_items < 1 or ttl_ms <= 0:
            raise ValueError("max_items and ttl_ms must be positive")
        self.max_items = max_items
        self.ttl_ms = ttl_ms
        self._seen: OrderedDict[str, int] = OrderedDict()  # id -> first seen, oldest first
        self.evicted_by_age = 0
        self.evicted_by_size = 0

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, item: object) -> bool:
        return item in self._seen

    def seen_before(self, item_id: str, now_ms: int) -> bool:
        """True if ``item_id`` was seen within the ttl; otherwise remember it and return False."""
        self._expire(now_ms)
        if item_id in self._seen:
            return True
        self._seen[item_id] = now_ms
        while len(self._seen) > self.max_items:
            self._seen.popitem(last=False)
            self.evicted_by_size += 1
        return False

    def _expire(self, now_ms: int) -> None:
        # Insertion order is first-sighting order; with times that never go far backwards
        # the front is the oldest, so expiry is a pop from the front.
        cutoff = now_ms - self.ttl_ms
        while self._seen:
            item_id, t = next(iter(self._seen.items()))
            if t > cutoff:
                break
            del self._seen[item_id]
            self.evicted_by_age += 1

    def to_state(self) -> dict[str, Any]:
        return {
            "v": _STATE_VERSION,
            "max_items": self.max_items,
            "ttl_ms": self.ttl_ms,
            "items": [[k, t] for k, t in self._seen.items()],
            "evicted_by_age": self.evicted_by_age,
            "evicted_by_size": self.evicted_by_size,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], max_items: int | None = None, ttl_ms: int | None = None) -> SeenSet:
        """Rebuild from :meth:`to_state`; explicit limits override the stored ones (config change)."""
        s = cls(max_items or int(state["max_items"]), ttl_ms or int(state["ttl_ms"]))
        for k, t in state.get("items", []):
            s._seen[str(k)] = int(t)
        while len(s._seen) > s.max_items:
            s._seen.popitem(last=False)
            s.evicted_by_size += 1
        s.evicted_by_age += int(state.get("evicted_by_age", 0))
        s.evicted_by_size += int(state.get("evicted_by_size", 0))
        return s


class IncidentLedger:
    """Alert dedupe: one alert per incident, an incident being activity on one key with gaps
    shorter than ``cooldown_ms``.

    :meth:`admit` returns True for a key's first occurrence, or when ``cooldown_ms`` has passed
    since its last *activity* (every call is activity, admitted or not). So a person lingering
    in a zone keeps one incident open instead of re-alerting each cooldown period.
    Keys idle for at least the cooldown are pruned: that is invisible to callers, because a
    pruned key would be admitted anyway.
    """

    def __init__(self, cooldown_ms: int, max_items: int = 100_000) -> None:
        if cooldown_ms < 0 or max_items < 1:
            raise ValueError("cooldown_ms must be >= 0 and max_items positive")
        self.cooldown_ms = cooldown_ms
        self.max_items = max_items
        self._open: OrderedDict[str, tuple[int, int]] = OrderedDict()  # key -> (start, last)
        self.evicted_by_size = 0

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, incident_key: str, now_ms: int) -> bool:
        self._prune(now_ms)
        entry = self._open.pop(incident_key, None)
        if entry is not None and now_ms - entry[1] < self.cooldown_ms:
            self._open[incident_key] = (entry[0], max(entry[1], now_ms))
            return False
        self._open[incident_key] = (now_ms, now_ms)
        while len(self._open) > self.max_items:
            self._open.popitem(last=False)
            self.evicted_by_size += 1
        return True

    def start_ms(self, incident_key: str) -> int | None:
        """When the key's current incident began (for :func:`alert_id`), or None."""
        entry = self._open.get(incident_key)
        return None if entry is None else entry[0]

    def _prune(self, now_ms: int) -> None:
        # Ordered by last activity (admit re-inserts at the end), so stale keys are in front.
        while self._open:
            key, (_, last) = next(iter(self._open.items()))
            if now_ms - last < self.cooldown_ms:
                break
            del self._open[key]

    def to_state(self) -> dict[str, Any]:
        return {
            "v": _STATE_VERSION,
            "cooldown_ms": self.cooldown_ms,
            "open": [[k, s, last] for k, (s, last) in self._open.items()],
            "evicted_by_size": self.evicted_by_size,
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], cooldown_ms: int | None = None, max_items: int = 100_000
    ) -> IncidentLedger:
        led = cls(int(state["cooldown_ms"]) if cooldown_ms is None else cooldown_ms, max_items)
        for k, s, last in state.get("open", []):
            led._open[str(k)] = (int(s), int(last))
        led.evicted_by_size += int(state.get("evicted_by_size", 0))
        return led


def alert_id(rule_id: str, cam: str, incident_key: str, cause: int | str) -> str:
    """Deterministic alert id: the same cause (incident start ms, or the first event id) gives
    the same id on every run, so reprocessing re-emits rather than duplicates an alert.

    24 hex chars of SHA-1 over the unit-separated parts (an identifier, not a security
    measure); it matches the schema's id pattern.
    """
    raw = "\x1f".join((rule_id, cam, incident_key, str(cause))).encode()
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:24]
