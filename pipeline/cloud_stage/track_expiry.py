"""Expire per-track state whose ``track_ended`` never arrived.

Rule state and incident ledger entries (``rule|cam|track``) and the track's cloud verdict
(``cam|track``; ``cam`` is the ``site/cam`` camera key) are deleted when the track ends. An edge
that crashes, or a ``track_ended`` that was dead-lettered, would leave them in the tables for
ever: months of such leftovers are a slow leak in every worker and in the changelog. This index
remembers, per camera, the event time each track last appeared and deletes tracks silent for
``cloud.track_state_ttl_s`` while handling a later event of the same camera: that event's
partition is the one the keys belong to (the events topic is keyed by camera), so the deletes
are changelogged there.

Bounded work: at most ``SWEEP_PER_EVENT`` tracks per event. The index is in memory and rebuilt
from the tables after a rebalance (tracks then count from their last rule-state time).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from pipeline.metrics import Registry
from pipeline.operators.rules import state_last_ms

SWEEP_PER_EVENT = 8


class TrackExpiry:
    def __init__(
        self,
        rule_state: MutableMapping[str, Any],
        tracks: MutableMapping[str, Any],
        per_track: Sequence[MutableMapping[str, Any]],
        keys_for: Callable[[str, int], list[str]],
        ttl_s: float,
        metrics: Registry,
    ) -> None:
        """``per_track``: the tables keyed by ``keys_for(cam, track)`` (rule state, incidents);
        ``tracks``: the verdict table keyed ``cam|track``."""
        self.rule_state, self.tracks = rule_state, tracks
        self.per_track, self.keys_for = per_track, keys_for
        self.ttl_ms = int(ttl_s * 1000)
        self.metrics = metrics
        # cam -> track -> last event time (ms); least recently seen first
        self._last: dict[str, OrderedDict[int, int]] = {}

    def reset(self) -> None:
        self._last.clear()

    def _index(self, cam: str, now_ms: int) -> OrderedDict[int, int]:
        idx = self._last.get(cam)
        if idx is None:
            seen: dict[int, int] = {}
            for key, value in list(self.rule_state.items()):
                parts = key.split("|")
                if len(parts) == 3 and parts[1] == cam and parts[2].isdigit() and isinstance(value, dict):
                    t = state_last_ms(value) or now_ms  # no time stored: count from now
                    seen[int(parts[2])] = max(seen.get(int(parts[2]), 0), t)
            for key in list(self.tracks.keys()):
                c, _, track = key.partition("|")
                if c == cam and track.isdigit():
                    seen.setdefault(int(track), now_ms)
            idx = OrderedDict(sorted(seen.items(), key=lambda kv: kv[1]))
            self._last[cam] = idx
        return idx

    def touch(self, cam: str, track: int, ts_ms: int, ended: bool = False) -> list[int]:
        """Record an event of ``track``; returns the tracks of ``cam`` expired now (state deleted)."""
        idx = self._index(cam, ts_ms)
        idx.pop(track, None)
        if not ended:
            idx[track] = ts_ms
        expired: list[int] = []
        while idx and len(expired) < SWEEP_PER_EVENT:
            old_track, last = next(iter(idx.items()))
            if last >= ts_ms - self.ttl_ms:
                break  # ordered by last event time: the rest are newer
            del idx[old_track]
            self._delete(cam, old_track)
            expired.append(old_track)
        if expired:
            self.metrics.inc("cloud_track_state_expired_total", len(expired),
                             help="Tracks whose state was dropped without a track_ended.")  # fmt: skip
        return expired

    def _delete(self, cam: str, track: int) -> None:
        for key in self.keys_for(cam, track):
            for table in self.per_track:
                if key in table:
                    del table[key]
        tkey = f"{cam}|{track}"
        if tkey in self.tracks:
            del self.tracks[tkey]
