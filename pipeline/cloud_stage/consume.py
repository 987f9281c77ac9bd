"""First step of the cloud data path: decode each Kafka record, dead-letter the poison ones,
and drop events whose id was already processed (at-least-once delivery and edge replays
produce duplicates) before they touch any state.

Seen ids live in a Faust table (``seen``, key ``cam|event_id`` -> first-seen ms) so a restarted
worker recovers them from the changelog. The set is bounded and windowed per camera: ids older
than ``cloud.dedupe_window_s`` or beyond ``cloud.dedupe_max_per_camera`` are deleted (with a
changelog tombstone) while processing that camera's events, i.e. from the right partition.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import MutableMapping
from typing import Any, Final

from pipeline.metrics import Registry
from pipeline.operators.rules import camera_key
from pipeline.operators.schema import Event, Rejected, decode_event
from pipeline.operators.wire import dead_letter, encode_dead_letter

DLQ_PAYLOAD_CAP: Final = 8 * 1024
PRUNE_PER_EVENT: Final = 16  # deletions per event: bounded work, the backlog drains over time


def decode(raw: Any) -> Event | Rejected:
    if not isinstance(raw, bytes | bytearray):
        return Rejected("not_bytes", f"record value is {type(raw).__name__}")
    return decode_event(bytes(raw))


def dead_letter_record(rejected: Rejected, topic: str, raw: Any, now_ms: int | None = None) -> bytes:
    """Dead-letter value of a record refused on ``topic`` (key = the topic; docs/CONTRACTS.md)."""
    payload = bytes(raw) if isinstance(raw, bytes | bytearray) else repr(raw).encode()
    ts = now_ms if now_ms is not None else int(time.time() * 1000)
    return encode_dead_letter(dead_letter(reason=rejected.reason, detail=rejected.detail, source="kafka",
                                          topic=topic, payload=payload, now_ms=ts, cap=DLQ_PAYLOAD_CAP))  # fmt: skip


class SeenIndex:
    """Bounded, windowed set of processed event ids on top of a changelogged table."""

    def __init__(
        self, table: MutableMapping[str, int], window_s: float, max_per_camera: int, metrics: Registry
    ) -> None:
        self.table = table
        self.window_ms = int(window_s * 1000)
        self.max_per_camera = max_per_camera
        self.metrics = metrics
        self._order: dict[str, deque[tuple[int, str]]] = {}  # cam -> (first seen ms, key), oldest first

    def reset(self) -> None:
        """Forget the in-memory order (after a rebalance); it is rebuilt from the table."""
        self._order.clear()

    @staticmethod
    def key(event: Event) -> str:
        return f"{camera_key(event.site, event.cam)}|{event.id}"

    def _order_of(self, cam: str) -> deque[tuple[int, str]]:
        order = self._order.get(cam)
        if order is None:
            prefix = f"{cam}|"
            order = deque(sorted((int(v), k) for k, v in self.table.items() if k.startswith(prefix)))
            self._order[cam] = order
        return order

    def seen(self, event: Event) -> bool:
        return self.key(event) in self.table

    def add(self, event: Event, now_ms: int) -> None:
        """Remember ``event`` and forget at most a few expired ids of its camera (same partition)."""
        key = self.key(event)
        order = self._order_of(camera_key(event.site, event.cam))
        self.table[key] = now_ms
        order.append((now_ms, key))
        pruned = 0
        while (
            order
            and pruned < PRUNE_PER_EVENT
            and (order[0][0] < now_ms - self.window_ms or len(order) > self.max_per_camera)
        ):
            _, old = order.popleft()
            if old != key and old in self.table:
                del self.table[old]
                pruned += 1
        if pruned:
            self.metrics.inc("cloud_dedupe_forgotten_total", pruned, help="Event ids aged out of the seen set.")
