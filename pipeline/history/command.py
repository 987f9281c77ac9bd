"""``pipeline history``: keep every alert in SQL (SQLite embedded, PostgreSQL in compose)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from pipeline.cli_support import add_override
from pipeline.settings import Settings

log = logging.getLogger(__name__)

HISTORY_HELP = """\
Consume the alerts topic (Kafka consumer group history.group, at least once) into a SQL
database and keep it searchable for the console: sqlite:///PATH (embedded, the default, the
demo) or postgresql://USER:PASSWORD@HOST:PORT/DB (psycopg 3).

Idempotent by alert id (primary key): redelivered alerts are stored once. Offsets are committed
only after the database transaction of their batch committed. Bad alert records go to the
dead-letter topic with their reason. Schema migrations run at start (table schema_migrations);
alerts and crops older than history.retention_days are deleted every retention_interval_s.
With history.crops the events topic's track_started crops are kept too (capped at
history.crop_max_bytes, optionally blurred again: history.crop_blur).
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "history",
        help="Store alerts from Kafka in SQLite or PostgreSQL (searchable history for the console).",
        description=HISTORY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_override(p, "--database-url", path="history.database_url", metavar="URL",
                 help="sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB.")  # fmt: skip
    add_override(p, "--group", path="history.group", metavar="GROUP", help="Kafka consumer group.")
    add_override(p, "--retention-days", path="history.retention_days", type=float, metavar="DAYS",
                 help="Delete alerts older than this.")  # fmt: skip
    add_override(p, "--health-port", path="history.health_port", type=int, metavar="PORT",
                 help="Serve /healthz and /metrics here.")  # fmt: skip
    add_override(p, "--bootstrap-servers", path="kafka.bootstrap_servers", metavar="SERVERS", help="Kafka bootstrap.")
    p.add_argument("--migrate-only", action="store_true", help="Apply schema migrations and exit.")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.history.consumer import HistoryConsumer
    from pipeline.history.store import HistoryStore
    from pipeline.metrics import Registry, serve_http

    store = HistoryStore(settings.history.database_url)
    try:
        applied = store.migrate()
        log.info("history: %s %s at schema version %d%s", store.dialect, store.where, store.schema_version(),
                 f" (applied {applied})" if applied else "")  # fmt: skip
        if args.migrate_only:
            return 0
        metrics = Registry()
        consumer = HistoryConsumer(settings, store, metrics)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        server = None
        if settings.history.health_port is not None:
            server = serve_http(metrics, settings.history.health_port, health=consumer.ready.is_set)
        try:
            consumer.run(stop)
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
        log.info("history: stopped (%d alerts stored this run)", int(metrics.counter("history_alerts_stored_total")))
        return 0
    finally:
        store.close()
