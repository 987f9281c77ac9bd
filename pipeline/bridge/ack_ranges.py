"""Seqs that Kafka acknowledged, per camera, folded into inclusive ranges for the edge."""

from __future__ import annotations

import threading
from collections.abc import Iterable


def merge_ranges(seqs: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """``[5, 1, 2, 3, 7, 6]`` -> ``((1, 3), (5, 7))``; duplicates are fine."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return tuple(out)


CameraKey = tuple[str, str]  # (site, cam)


class AckCollector:
    """Thread-safe: Kafka's I/O thread adds, the ack publisher takes every ``ack_interval_ms``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seqs: dict[CameraKey, list[int]] = {}

    def add(self, site: str, cam: str, seq: int) -> None:
        with self._lock:
            self._seqs.setdefault((site, cam), []).append(seq)

    def take(self) -> dict[CameraKey, tuple[tuple[int, int], ...]]:
        """Ranges acknowledged since the last call, per camera."""
        with self._lock:
            seqs, self._seqs = self._seqs, {}
        return {key: merge_ranges(v) for key, v in seqs.items()}
