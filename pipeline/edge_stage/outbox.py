"""On-disk outbox: sixth step of the edge data path (... -> events -> outbox -> publisher).

Every event is written here (SQLite, WAL) *before* it is published, and its row is deleted only
when the bridge acknowledges its seq (``.../acks``: inclusive seq ranges that Kafka accepted). So a
broker outage, a bridge outage or an edge restart delays events but loses none, within the caps:

- ``max_events``: beyond it the oldest rows are dropped (counted: ``outbox_dropped_total``);
- ``max_age_s``: rows older than this are dropped (counted the same way, ``why="age"``).

Per-camera ``seq`` numbers come from a persisted counter (table ``seqs``), so they keep growing
across restarts. A row is *due* for publishing when it was never sent, or was sent more than
``ack_timeout`` ago without an ack (replayed, ``outbox_replayed_total``). Durability: WAL with
``synchronous=NORMAL`` survives a process crash; a power cut may lose the last transactions.

Thread-safe: camera threads append, the publisher thread reads, marks and deletes.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.metrics import Registry
from pipeline.operators.schema import Event, encode_event

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,
    cam TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE (cam, seq)
);
CREATE TABLE IF NOT EXISTS seqs (cam TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


_UPSERT_STATE = "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    rid: int
    cam: str
    seq: int
    topic: str
    payload: bytes
    attempts: int


class Outbox:
    def __init__(
        self,
        path: Path | str,
        *,
        max_events: int = 200_000,
        max_age_s: float = 7 * 24 * 3600,
        metrics: Registry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_events, self.max_age_ms = max_events, int(max_age_s * 1000)
        self.metrics = metrics or Registry()
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # Rows sent by an earlier process are due again: its in-flight state is gone.
        self._db.execute("UPDATE events SET sent_ms = NULL WHERE sent_ms IS NOT NULL")
        self._count = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        self._gauge()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _gauge(self) -> None:
        self.metrics.set("outbox_depth", self._count, help="Events stored and not yet acknowledged.")

    # ------------------------------------------------------------------ writing

    def append(self, event: Event, topic: str) -> Event:
        """Assign the camera's next seq, store the encoded event, return it with its seq."""
        with self._lock:
            now = self._now_ms()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT next_seq FROM seqs WHERE cam = ?", (event.cam,)).fetchone()
                seq = int(row[0]) if row else 1
                stored = dataclasses.replace(event, seq=seq)
                self._db.execute(
                    "INSERT INTO events (cam, seq, topic, payload, created_ms) VALUES (?, ?, ?, ?, ?)",
                    (event.cam, seq, topic, encode_event(stored), now),
                )
                self._db.execute(
                    "INSERT INTO seqs (cam, next_seq) VALUES (?, ?)"
                    " ON CONFLICT(cam) DO UPDATE SET next_seq = excluded.next_seq",
                    (event.cam, seq + 1),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count += 1
            if self._count > self.max_events:
                self._drop_oldest_locked(self._count - self.max_events, "count")
            self._gauge()
        return stored

    def _drop_oldest_locked(self, n: int, why: str) -> None:
        cur = self._db.execute("DELETE FROM events WHERE rid IN (SELECT rid FROM events ORDER BY rid LIMIT ?)", (n,))
        self._dropped(cur.rowcount, why)

    def _dropped(self, n: int, why: str) -> None:
        if n > 0:
            self._count -= n
            self.metrics.inc("outbox_dropped_total", n, help="Events dropped by the outbox caps.", why=why)

    def expire(self) -> int:
        """Drop rows older than ``max_age_s``; returns how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM events WHERE created_ms < ?", (self._now_ms() - self.max_age_ms,))
            self._dropped(cur.rowcount, "age")
            self._gauge()
            return max(0, cur.rowcount)

    # ------------------------------------------------------------------ publishing side

    def due(self, ack_timeout_s: float, limit: int) -> list[OutboxRow]:
        """Rows to publish now, oldest first: never sent, or sent ``ack_timeout_s`` ago and unacked."""
        cutoff = self._now_ms() - int(ack_timeout_s * 1000)
        with self._lock:
            rows = self._db.execute(
                "SELECT rid, cam, seq, topic, payload, attempts FROM events"
                " WHERE sent_ms IS NULL OR sent_ms <= ? ORDER BY rid LIMIT ?",
                (cutoff, limit),
            ).fetchall()
        return [OutboxRow(int(r[0]), r[1], int(r[2]), r[3], bytes(r[4]), int(r[5])) for r in rows]

    def mark_sent(self, rids: Iterable[int]) -> None:
        now = self._now_ms()
        with self._lock:
            self._db.executemany(
                "UPDATE events SET sent_ms = ?, attempts = attempts + 1 WHERE rid = ?", [(now, r) for r in rids]
            )

    def mark_unsent(self) -> None:
        """Make every row due again (e.g. after the broker lost our session)."""
        with self._lock:
            self._db.execute("UPDATE events SET sent_ms = NULL")

    def ack(self, cam: str, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete the camera's rows whose seq is in one of the inclusive ranges; returns how many."""
        deleted = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for lo, hi in ranges:
                    cur = self._db.execute("DELETE FROM events WHERE cam = ? AND seq BETWEEN ? AND ?", (cam, lo, hi))
                    deleted += max(0, cur.rowcount)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count -= deleted
            self._gauge()
        if deleted:
            self.metrics.inc("outbox_acked_total", deleted, help="Events deleted after the bridge's ack.", cam=cam)
        return deleted

    # ------------------------------------------------------------------ reading

    def depth(self) -> int:
        with self._lock:
            return self._count

    def unsent(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events WHERE sent_ms IS NULL").fetchone()[0])

    def seqs(self, cam: str) -> list[int]:
        with self._lock:
            return [int(r[0]) for r in self._db.execute("SELECT seq FROM events WHERE cam = ? ORDER BY seq", (cam,))]

    def get_state(self, key: str, default: int = 0) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else default

    def set_state(self, key: str, value: int) -> None:
        with self._lock:
            self._db.execute(_UPSERT_STATE, (key, value))

    def get_text(self, key: str) -> str | None:
        """A text value of the node's state (e.g. a tracker snapshot); None when unset."""
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def set_text(self, key: str, value: str | None) -> None:
        """Store (or with None, delete) a text value next to the events, in the same database."""
        with self._lock:
            if value is None:
                self._db.execute("DELETE FROM state WHERE key = ?", (key,))
            else:
                self._db.execute(_UPSERT_STATE, (key, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
