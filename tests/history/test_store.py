"""The history store on real SQLite and real PostgreSQL: migrations, idempotent writes, queries."""

from __future__ import annotations

import pytest

from pipeline.history.crops import prepare_crop
from pipeline.history.migrations import LATEST_VERSION
from pipeline.history.store import AlertQuery, HistoryStore, StoredAlert, TrackCrop
from pipeline.local_stack.postgres import PostgresProcess
from pipeline.operators.schema import Alert
from tests.history.history_helpers import crop_jpeg, make_alert

pytestmark = pytest.mark.integration


def stored(alerts: list[Alert]) -> list[StoredAlert]:
    return [StoredAlert(a, a.ts + 5, "alerts", 0, i) for i, a in enumerate(alerts)]


def test_migrations_are_versioned_and_run_once(store_url: str) -> None:
    store = HistoryStore(store_url)
    try:
        assert store.migrate() == [m for m in range(1, LATEST_VERSION + 1)]
        assert store.migrate() == []  # second start: nothing to do
        assert store.schema_version() == LATEST_VERSION
    finally:
        store.close()
    again = HistoryStore(store_url)  # a new connection sees the same version
    try:
        assert again.migrate() == []
        assert again.schema_version() == LATEST_VERSION
    finally:
        again.close()


def test_redelivered_alerts_are_stored_once(store_url: str) -> None:
    store = HistoryStore(store_url)
    store.migrate()
    try:
        alerts = [make_alert(n) for n in range(10)]
        first = store.write(stored(alerts[:6]))
        assert (first.inserted, first.duplicates) == (6, 0)
        # a redelivered batch overlapping the first one, with a repeat inside itself
        second = store.write(stored(alerts[4:] + alerts[9:]))
        assert (second.inserted, second.duplicates) == (4, 3)
        assert store.count(AlertQuery()) == 10
        row = store.get(alerts[3].id)
        assert row is not None and row.alert == alerts[3]
    finally:
        store.close()


def test_search_filters_pages_and_counts_per_rule(store_url: str) -> None:
    store = HistoryStore(store_url)
    store.migrate()
    base = 1_800_000_000_000
    try:
        alerts = [
            make_alert(n, site="site-a" if n % 2 else "site-b", cam=f"cam-{n % 3}",
                       rule="line-in" if n % 4 == 0 else "person-present", ts=base + n * 60_000)
            for n in range(40)
        ]  # fmt: skip
        store.write(stored(alerts))
        page1 = store.search(AlertQuery(site="site-a", limit=7))
        page2 = store.search(AlertQuery(site="site-a", limit=7, offset=7))
        expected = sorted((a for a in alerts if a.site == "site-a"), key=lambda a: -a.ts)
        assert [r.alert.id for r in page1 + page2] == [a.id for a in expected[:14]]
        assert store.count(AlertQuery(site="site-a")) == 20
        assert store.count(AlertQuery(cam="cam-1", rule="line-in")) == sum(
            1 for a in alerts if a.cam == "cam-1" and a.rule == "line-in"
        )
        window = AlertQuery(since_ms=base + 10 * 60_000, until_ms=base + 20 * 60_000)
        assert store.count(window) == 10
        counts = store.rule_counts(base, 10 * 60_000, 4)
        assert counts.by_rule["line-in"] == [3, 2, 3, 2]
        assert counts.by_rule["person-present"] == [7, 8, 7, 8]
        assert store.distinct("rule") == ["line-in", "person-present"]
    finally:
        store.close()


def test_retention_deletes_by_age_and_crops_join(store_url: str) -> None:
    store = HistoryStore(store_url)
    store.migrate()
    try:
        old, new = make_alert(1, ts=1_000_000, track=1), make_alert(2, ts=2_000_000, track=2)
        jpeg = crop_jpeg()
        crops = [
            TrackCrop("site-a", "cam-1", 1, "e1", 999_000, jpeg),
            TrackCrop("site-a", "cam-1", 2, "e2", 1_999_000, jpeg),
        ]
        store.write(stored([old, new]), crops)
        got = store.get(new.id)
        assert got is not None and got.has_crop
        assert store.crop("site-a", "cam-1", 2) == jpeg
        assert store.delete_older_than(1_500_000) == (1, 1)
        assert store.get(old.id) is None and store.crop("site-a", "cam-1", 1) is None
        assert store.get(new.id) is not None
    finally:
        store.close()


@pytest.mark.unit
def test_crops_are_kept_under_the_cap() -> None:
    import base64

    big = crop_jpeg(400, 800, noise=True)
    assert len(big) > 60_000
    small = prepare_crop(base64.b64encode(big).decode(), max_bytes=24 * 1024, blur="none")
    assert isinstance(small, bytes) and len(small) <= 24 * 1024 and small[:2] == b"\xff\xd8"
    assert prepare_crop("not base64!", max_bytes=24 * 1024, blur="none") == "crop_not_base64"
    assert prepare_crop(base64.b64encode(b"junk").decode(), max_bytes=2, blur="none") == "crop_not_jpeg"
    blurred = prepare_crop(base64.b64encode(crop_jpeg()).decode(), max_bytes=24 * 1024, blur="person_head")
    assert isinstance(blurred, bytes)


def test_postgres_connection_dropped_by_the_server_is_made_again(postgres_server: PostgresProcess) -> None:
    """A server restart or failover drops the store's session: the statement that meets it fails
    (the consumer retries that batch), and the next one runs on a new connection."""
    import uuid

    import psycopg

    url = postgres_server.create_database(f"h{uuid.uuid4().hex[:10]}")
    store = HistoryStore(url)
    store.migrate()
    try:
        alerts = [make_alert(n) for n in range(4)]
        assert store.write(stored(alerts[:2])).inserted == 2
        with psycopg.connect(url, autocommit=True) as admin:  # what the server does to us on a restart
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        assert ended == [(True,)]
        with pytest.raises(psycopg.OperationalError):
            store.write(stored(alerts[2:]))
        assert store.write(stored(alerts[2:])).inserted == 2
        assert store.count(AlertQuery()) == 4 and store.reconnects == 1
    finally:
        store.close()


def test_a_sql_ascii_database_still_gives_text(postgres_server: PostgresProcess) -> None:
    """initdb on a host without a locale makes SQL_ASCII databases, where psycopg returns text
    columns as bytes; the console's history chart failed on it in the compose tier."""
    import uuid

    import psycopg

    name = f"h{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' TEMPLATE template0")
    store = HistoryStore(postgres_server.url(name))
    store.migrate()
    try:
        alerts = [make_alert(n) for n in range(3)]
        store.write(stored(alerts))
        counts = store.rule_counts(min(a.ts for a in alerts) - 1000, 3_600_000, 2)
        assert list(counts.by_rule) == [alerts[0].rule] and isinstance(next(iter(counts.by_rule)), str)
        assert store.distinct("cam") == [alerts[0].cam]
        row = store.get(alerts[1].id)
        assert row is not None and row.alert == alerts[1]
    finally:
        store.close()
