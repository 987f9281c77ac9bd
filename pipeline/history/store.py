"""The alert history in SQL: one class over SQLite (stdlib, embedded) and PostgreSQL (psycopg 3).

Writes are idempotent by alert id (``INSERT ... ON CONFLICT (id) DO NOTHING``, the primary key),
so a batch that Kafka redelivers after a crash is stored once; a batch of alerts and crops is
one transaction. The consumer commits its Kafka offsets only after :meth:`HistoryStore.write`
returned, which is what makes the whole path at-least-once into an exactly-once table.

SQLite runs in WAL mode with ``synchronous=FULL``: a transaction that returned is on disk even
if the machine loses power, before the offsets that depend on it are committed.

Thread model: one connection guarded by a lock; the consumer thread writes, the console's
request threads read. SQL is written once with ``?`` placeholders (turned into ``%s`` for
psycopg); no literal question mark appears in it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.history.migrations import MIGRATIONS, MIGRATIONS_TABLE, Dialect, render
from pipeline.operators.schema import Alert

log = logging.getLogger(__name__)

PG_MIGRATION_LOCK = 0x70_69_70_65  # pg_advisory_xact_lock key: "pipe"

_ALERT_COLUMNS = (
    "id", "ts", "site", "cam", "rule", "event_id", "event_ts", "track", "label", "box", "edge_score",
    "cloud_score", "fused_score", "verification", "model", "detail", "received_ms", "kafka_topic",
    "kafka_partition", "kafka_offset",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """An alert with where and when the store got it (for tracing a row back to Kafka)."""

    alert: Alert
    received_ms: int
    topic: str = ""
    partition: int = 0
    offset: int = 0

    def row(self) -> tuple[Any, ...]:
        a = self.alert
        return (
            a.id, a.ts, a.site, a.cam, a.rule, a.event_id, a.event_ts, a.track, a.label, json.dumps(list(a.box)),
            a.edge_score, a.cloud_score, a.fused_score, a.verification, a.model, a.detail, self.received_ms,
            self.topic, self.partition, self.offset,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class TrackCrop:
    site: str
    cam: str
    track: int
    event_id: str
    ts: int
    jpeg: bytes


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: int
    duplicates: int
    crops: int


@dataclass(frozen=True, slots=True)
class AlertRow:
    alert: Alert
    received_ms: int
    has_crop: bool


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """Filters of a history search; None = any. Times are epoch ms, ``until_ms`` exclusive."""

    site: str | None = None
    cam: str | None = None
    rule: str | None = None
    verification: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = 50
    offset: int = 0

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column in ("site", "cam", "rule", "verification"):
            value = getattr(self, column)
            if value:
                clauses.append(f"a.{column} = ?")
                params.append(value)
        if self.since_ms is not None:
            clauses.append("a.ts >= ?")
            params.append(self.since_ms)
        if self.until_ms is not None:
            clauses.append("a.ts < ?")
            params.append(self.until_ms)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@dataclass
class RuleCounts:
    """Alerts per rule in fixed time buckets (``bucket_ms`` wide, starting at ``start_ms``)."""

    start_ms: int
    bucket_ms: int
    buckets: int
    by_rule: dict[str, list[int]] = field(default_factory=dict)


def dialect_of(url: str) -> Dialect:
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    raise ConfigError(f"history.database_url must start with sqlite:/// or postgresql://, got {url.split(':')[0]!r}")


class HistoryStore:
    def __init__(self, url: str) -> None:
        self.dialect: Dialect = dialect_of(url)
        self._lock = threading.Lock()
        self._conn: Any
        if self.dialect == "sqlite":
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.where = str(path)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (one transaction per batch).
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        else:
            self.where = url.split("@")[-1]  # host:port/db, no credentials in logs
            self._url = url
            self._conn = self._pg_connect()
        self.reconnects = 0

    def _pg_connect(self) -> Any:
        import psycopg  # only the PostgreSQL deployments need it

        # client_encoding utf8: a database created as SQL_ASCII (initdb on a host with no locale)
        # would otherwise hand every text column back as bytes
        return psycopg.connect(self._url, autocommit=True, connect_timeout=10, client_encoding="utf8")

    def _connection(self) -> Any:
        """The connection, made again when PostgreSQL dropped the old one (a server restart, a
        failover, an idle timeout): psycopg never reconnects by itself, so without this a store
        stayed broken until its process restarted while the consumer retried the same batch.
        The statement that met the broken connection fails as before (the consumer retries it);
        the next one runs on a new connection. Called with ``_lock`` held."""
        if self.dialect == "postgresql" and (self._conn.closed or self._conn.broken):
            with contextlib.suppress(Exception):  # already broken: nothing to close cleanly
                self._conn.close()
            self._conn = self._pg_connect()
            self.reconnects += 1
            log.warning("history: connection to %s was lost; reconnected (%d so far)", self.where, self.reconnects)
        return self._conn

    # ------------------------------------------------------------------ plumbing

    def _sql(self, statement: str) -> str:
        return statement if self.dialect == "sqlite" else statement.replace("?", "%s")

    @contextmanager
    def _transaction(self, *, exclusive: bool = False) -> Iterator[Any]:
        with self._lock:
            conn = self._connection()
            if self.dialect == "sqlite":
                cur = conn.cursor()
                cur.execute("BEGIN IMMEDIATE" if exclusive else "BEGIN")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            else:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            cur = self._connection().cursor()
            try:
                cur.execute(self._sql(statement), tuple(params))
                return list(cur.fetchall())
            finally:
                cur.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ schema

    def migrate(self) -> list[int]:
        """Apply the migrations not yet applied; returns their versions."""
        applied_now: list[int] = []
        with self._transaction(exclusive=True) as cur:
            if self.dialect == "postgresql":
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (PG_MIGRATION_LOCK,))
            cur.execute(MIGRATIONS_TABLE)
            cur.execute("SELECT version FROM schema_migrations")
            done = {int(r[0]) for r in cur.fetchall()}
            for m in MIGRATIONS:
                if m.version in done:
                    continue
                for statement in m.statements:
                    cur.execute(render(statement, self.dialect))
                cur.execute(
                    self._sql("INSERT INTO schema_migrations (version, description, applied_ms) VALUES (?, ?, ?)"),
                    (m.version, m.description, int(time.time() * 1000)),
                )
                applied_now.append(m.version)
        return applied_now

    def schema_version(self) -> int:
        rows = self._query("SELECT MAX(version) FROM schema_migrations")
        return int(rows[0][0] or 0)

    # ------------------------------------------------------------------ writing

    def write(self, alerts: Sequence[StoredAlert], crops: Sequence[TrackCrop] = ()) -> WriteResult:
        """Store a batch in one transaction; alerts already stored (same id) are left as they are."""
        columns = ", ".join(_ALERT_COLUMNS)
        marks = ", ".join("?" for _ in _ALERT_COLUMNS)
        insert_alert = self._sql(f"INSERT INTO alerts ({columns}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING")  # noqa: S608
        insert_crop = self._sql(
            "INSERT INTO crops (site, cam, track, event_id, ts, jpeg) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (site, cam, track) DO NOTHING"
        )
        inserted = stored_crops = 0
        with self._transaction() as cur:
            for a in alerts:
                cur.execute(insert_alert, a.row())
                inserted += max(0, cur.rowcount)
            for c in crops:
                cur.execute(insert_crop, (c.site, c.cam, c.track, c.event_id, c.ts, c.jpeg))
                stored_crops += max(0, cur.rowcount)
        return WriteResult(inserted, len(alerts) - inserted, stored_crops)

    def delete_older_than(self, cutoff_ms: int) -> tuple[int, int]:
        """Retention: drop alerts and crops from before ``cutoff_ms``; returns (alerts, crops) deleted."""
        with self._transaction() as cur:
            cur.execute(self._sql("DELETE FROM alerts WHERE ts < ?"), (cutoff_ms,))
            alerts = max(0, cur.rowcount)
            cur.execute(self._sql("DELETE FROM crops WHERE ts < ?"), (cutoff_ms,))
            crops = max(0, cur.rowcount)
        return alerts, crops

    # ------------------------------------------------------------------ reading

    _SELECT = (
        "SELECT a.id, a.ts, a.site, a.cam, a.rule, a.event_id, a.event_ts, a.track, a.label, a.box, a.edge_score,"
        " a.cloud_score, a.fused_score, a.verification, a.model, a.detail, a.received_ms,"
        " CASE WHEN c.track IS NULL THEN 0 ELSE 1 END"
        " FROM alerts a LEFT JOIN crops c ON c.site = a.site AND c.cam = a.cam AND c.track = a.track"
    )

    @staticmethod
    def _row(r: Sequence[Any]) -> AlertRow:
        box = tuple(float(x) for x in json.loads(r[9]))
        alert = Alert(
            id=r[0], ts=int(r[1]), site=r[2], cam=r[3], rule=r[4], event_id=r[5], event_ts=int(r[6]),
            track=int(r[7]), label=r[8], box=(box[0], box[1], box[2], box[3]), edge_score=float(r[10]),
            cloud_score=None if r[11] is None else float(r[11]), fused_score=float(r[12]),
            verification=r[13], model=r[14], detail=r[15],
        )  # fmt: skip
        return AlertRow(alert, int(r[16]), bool(r[17]))

    def search(self, q: AlertQuery) -> list[AlertRow]:
        where, params = q.where()
        rows = self._query(f"{self._SELECT}{where} ORDER BY a.ts DESC, a.id DESC LIMIT ? OFFSET ?",
                           [*params, q.limit, q.offset])  # fmt: skip
        return [self._row(r) for r in rows]

    def count(self, q: AlertQuery) -> int:
        where, params = q.where()
        return int(self._query(f"SELECT COUNT(*) FROM alerts a{where}", params)[0][0])  # noqa: S608

    def get(self, alert_id: str) -> AlertRow | None:
        rows = self._query(f"{self._SELECT} WHERE a.id = ?", [alert_id])
        return self._row(rows[0]) if rows else None

    def crop(self, site: str, cam: str, track: int) -> bytes | None:
        rows = self._query("SELECT jpeg FROM crops WHERE site = ? AND cam = ? AND track = ?", [site, cam, track])
        return bytes(rows[0][0]) if rows else None

    def distinct(self, column: str) -> list[str]:
        """Values of site/cam/rule seen in the history (for the search form's choices)."""
        if column not in ("site", "cam", "rule", "verification"):
            raise ValueError(column)
        return [r[0] for r in self._query(f"SELECT DISTINCT {column} FROM alerts ORDER BY {column}")]  # noqa: S608

    def rule_counts(self, start_ms: int, bucket_ms: int, buckets: int) -> RuleCounts:
        end_ms = start_ms + bucket_ms * buckets
        rows = self._query(
            "SELECT rule, (ts - ?) / ?, COUNT(*) FROM alerts WHERE ts >= ? AND ts < ? GROUP BY 1, 2",
            [start_ms, bucket_ms, start_ms, end_ms],
        )
        out = RuleCounts(start_ms, bucket_ms, buckets)
        for rule, bucket, n in rows:
            series = out.by_rule.setdefault(rule, [0] * buckets)
            series[int(bucket)] += int(n)
        return out
