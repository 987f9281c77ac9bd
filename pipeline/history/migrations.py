"""Versioned schema of the alert history, for SQLite and PostgreSQL.

Each migration is applied once, in order, inside one transaction with its row in
``schema_migrations`` (version, description, applied_ms): a crash half-way leaves the schema at
the previous version, and a second store starting at the same moment waits on the lock (an
advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and then finds nothing left to do.
Never edit a released migration; append a new one.

Indexes follow the console's queries: newest first, filtered by site, camera or rule
(``WHERE site=? ORDER BY ts DESC``), and the per-rule counts over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]  # ``{blob}``/``{real}`` are filled in per dialect


_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"blob": "BLOB", "real": "REAL"},
    "postgresql": {"blob": "BYTEA", "real": "DOUBLE PRECISION"},
}

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "alerts and track crops",
        (
            """CREATE TABLE alerts (
                id TEXT PRIMARY KEY,
                ts BIGINT NOT NULL,
                site TEXT NOT NULL,
                cam TEXT NOT NULL,
                rule TEXT NOT NULL,
                event_id TEXT NOT NULL,
                event_ts BIGINT NOT NULL,
                track BIGINT NOT NULL,
                label TEXT NOT NULL,
                box TEXT NOT NULL,
                edge_score {real} NOT NULL,
                cloud_score {real},
                fused_score {real} NOT NULL,
                verification TEXT NOT NULL,
                model TEXT,
                detail TEXT NOT NULL,
                received_ms BIGINT NOT NULL,
                kafka_topic TEXT NOT NULL,
                kafka_partition INTEGER NOT NULL,
                kafka_offset BIGINT NOT NULL
            )""",
            "CREATE INDEX alerts_ts ON alerts (ts)",
            "CREATE INDEX alerts_site_ts ON alerts (site, ts)",
            "CREATE INDEX alerts_cam_ts ON alerts (cam, ts)",
            "CREATE INDEX alerts_rule_ts ON alerts (rule, ts)",
            """CREATE TABLE crops (
                site TEXT NOT NULL,
                cam TEXT NOT NULL,
                track BIGINT NOT NULL,
                event_id TEXT NOT NULL,
                ts BIGINT NOT NULL,
                jpeg {blob} NOT NULL,
                PRIMARY KEY (site, cam, track)
            )""",
            "CREATE INDEX crops_ts ON crops (ts)",
        ),
    ),
)


def render(statement: str, dialect: Dialect) -> str:
    return statement.format(**_TYPES[dialect])


MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_ms BIGINT NOT NULL
)"""
LATEST_VERSION = MIGRATIONS[-1].version
