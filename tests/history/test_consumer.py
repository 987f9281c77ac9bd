"""``pipeline history`` against real Kafka (Tansu) and real SQLite / PostgreSQL.

Redelivered alerts are stored once, a consumer killed mid-batch loses nothing, and a malformed
alert record goes to the dead-letter topic with its reason (and a metric).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.history.consumer import HistoryConsumer
from pipeline.history.store import AlertQuery, HistoryStore
from pipeline.local_stack.pipeline_service import PipelineService
from pipeline.metrics import Registry
from pipeline.settings import Settings
from pipeline.testing import wait_until
from tests.history.history_helpers import crop_jpeg, make_alert, produce, read_all, started_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def history_settings(make_settings: Callable[..., Settings], url: str, **history: object) -> Settings:
    return make_settings(history={"database_url": url, **history})


def test_redelivered_alerts_stored_once_and_bad_records_dead_lettered(
    make_settings: Callable[..., Settings], store_url: str
) -> None:
    settings = history_settings(make_settings, store_url)
    alerts = [make_alert(n, cam=f"cam-{n % 3}") for n in range(30)]
    jpeg = crop_jpeg()
    bad = [b"{not json", json.dumps({"v": 1, "id": "x"}).encode()]
    # every alert twice (a producer retry, a downlink resend), two bad records, crops of 3 tracks
    produce(settings, alerts + alerts, raw=bad, events=[started_event(a, jpeg) for a in alerts[:3]])
    store = HistoryStore(store_url)
    store.migrate()
    metrics = Registry()
    stop = threading.Event()
    consumer = HistoryConsumer(settings, store, metrics)
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: metrics.counter("dead_letters_total") >= 2 and store.count(AlertQuery()) >= 30
                          and metrics.counter("history_crops_stored_total") >= 3, 60), metrics.snapshot()  # fmt: skip
        assert store.count(AlertQuery()) == 30
        assert {r.alert.id for r in store.search(AlertQuery(limit=100))} == {a.id for a in alerts}
        assert metrics.counter("history_alerts_duplicate_total") == 30
        first, sixth = store.get(alerts[0].id), store.get(alerts[5].id)
        assert first is not None and first.has_crop and sixth is not None and not sixth.has_crop
        assert metrics.counter("dead_letters_total", reason="not_json", source="kafka") == 1
        assert metrics.counter("dead_letters_total", reason="missing_field", source="kafka") == 1
        dead = [json.loads(v) for v in read_all(settings, settings.kafka.dead_letter_topic)]
        assert sorted(d["reason"] for d in dead) == ["missing_field", "not_json"]
        assert all(d["source"] == "kafka" and d["topic"] == settings.kafka.alerts_topic for d in dead)
    finally:
        stop.set()
        thread.join(20)
        store.close()


class HistoryProcess(PipelineService):
    """``pipeline history`` as a child process (what a deployment runs)."""

    def __init__(self, settings: Settings, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "history.yaml"
        config.write_text(settings.to_yaml())
        super().__init__("history", data_dir, config, ["history"], start_timeout_s=90)


def test_consumer_killed_mid_batch_loses_nothing(
    make_settings: Callable[..., Settings], store_url: str, tmp_path: Path
) -> None:
    # small batches, so a SIGKILL lands between a database commit and the offset commit
    settings = history_settings(make_settings, store_url, batch_max=20, crops=False)
    alerts = [make_alert(n, cam=f"cam-{n % 4}") for n in range(1500)]
    produce(settings, alerts)
    store = HistoryStore(store_url)
    store.migrate()
    proc = HistoryProcess(settings, tmp_path / "history")
    try:
        proc.start()
        assert wait_until(lambda: store.count(AlertQuery()) >= 100, 60), proc.log_tail()
        proc.kill()
        stored_at_kill = store.count(AlertQuery())
        assert stored_at_kill < len(alerts), "the kill came too late to be mid-stream"
        proc.start()
        assert wait_until(lambda: store.count(AlertQuery()) >= len(alerts), 120), proc.log_tail()
        proc.stop()
        assert store.count(AlertQuery()) == len(alerts)
        ids = {r.alert.id for r in store.search(AlertQuery(limit=5000))}
        assert ids == {a.id for a in alerts}
    finally:
        proc.stop()
        store.close()
