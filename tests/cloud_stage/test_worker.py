"""The cloud worker as a deployment runs it (``pipeline cloud`` subprocess) against real Tansu and
the real model server: events in, alerts out."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.local_stack.model_server import ModelServerProcess
from pipeline.local_stack.ports import free_port
from pipeline.settings import REPO_ROOT, Settings
from pipeline.testing import wait_until
from tests.cloud_stage.cloud_stage_helpers import (
    RULE,
    AlertReader,
    CloudWorker,
    Crops,
    expected_id,
    produce,
    read_topic,
    track_events,
    worker_settings,
)

pytestmark = pytest.mark.integration


def test_alerts_dedupe_poison_and_restart(
    make_settings: Callable[..., Settings],
    model_server: object,
    crops: Crops,
    tmp_path: Path,
    cloud_worker: list[CloudWorker],
) -> None:
    s = worker_settings(make_settings, rules=[RULE], escalation="track_started", edge_weight=0.4)
    worker = CloudWorker(s, tmp_path / "cloud")
    cloud_worker.append(worker)
    worker.start()
    reader = AlertReader(s)

    # phase 1: 4 person tracks with real crops -> 4 verified alerts; a "person" whose crop is
    # background -> contradicted, fused 0.4*0.9 < 0.5 -> none; a car -> no rule; a better view
    # re-judges a track (below). All sent twice.
    events, expected = [], set()
    for i in range(4):
        cam, track = f"cam-{i % 2 + 1}", 10 + i
        evs = track_events(cam, track, crops.people[i % len(crops.people)])
        events += evs
        expected.add(expected_id(evs))
    events += track_events("cam-1", 50, crops.background)
    events += track_events("cam-2", 51, None, label="car")
    # a track whose first crop shows nobody (no alert) and whose second update carries the edge's
    # better view of a person: re-judged on that crop, it alerts there, verified
    late = track_events("cam-2", 52, crops.background)
    late[2] = dataclasses.replace(late[2], crop=crops.people[0], attrs={"view": "better"})
    events += late
    expected.add(expected_id(late[2:]))
    produce(s, events + events, extra=[b"not json", b'{"v":1,"id":"x"}'])
    alerts = reader.wait_for(len(expected), settle_s=3.0)
    assert {a.id for a in alerts} == expected, worker.log_tail()
    assert len(alerts) == len(expected), "duplicate events must not make duplicate alerts"
    for a in alerts:
        assert a.verification == "verified" and a.model and a.model.startswith("centernet@")
        assert a.cloud_score is not None and a.cloud_score >= 0.4
        assert a.fused_score == pytest.approx(0.4 * a.edge_score + 0.6 * a.cloud_score, abs=1e-3)
        assert a.label == "person" and a.site == "site-t"
    dead = read_topic(s, s.kafka.dead_letter_topic, min_records=2)
    assert sorted(d["reason"] for d in dead) == ["missing_field", "not_json"]
    assert all(d["source"] == "kafka" and d["topic"] == s.kafka.events_topic for d in dead)

    # phase 2: new tracks, the worker SIGKILLed while they are in flight, the old events replayed
    events2, expected2 = [], set()
    for i in range(6):
        cam, track = f"cam-{i % 3 + 1}", 20 + i
        evs = track_events(cam, track, crops.people[(i + 1) % len(crops.people)])
        events2 += evs
        expected2.add(expected_id(evs))
    produce(s, events2)
    time.sleep(0.3)
    worker.kill()
    produce(s, events)  # duplicates of phase 1 after the crash
    worker.start()
    alerts = reader.wait_for(len(expected | expected2), timeout_s=90, settle_s=4.0)
    assert {a.id for a in alerts} == expected | expected2, worker.diagnose()  # none lost, no new ids
    # phase 1 was committed long before the crash: its replayed events hit the recovered seen set
    assert sorted(a.id for a in alerts if a.id in expected) == sorted(expected)
    reader.close()


def _worker_with_own_model_server(
    ms: ModelServerProcess,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    cloud_worker: list[CloudWorker],
    **cloud: object,
) -> tuple[Settings, CloudWorker, AlertReader, int]:
    """A started worker on a model server the test may stop, with /metrics on the returned port."""
    web_port = free_port()
    s = worker_settings(make_settings, rules=[RULE], escalation="track_started", web_enabled=True,
                        web_port=web_port, **cloud)  # fmt: skip
    # breaker_failures=1: under CPU load the outage's events can share one Predict batch, i.e. one
    # failed call; with a higher threshold the breaker would then (correctly) stay closed.
    ms_update = {"address": ms.address, "breaker_failures": 1}
    s = s.model_copy(update={"model_server": s.model_server.model_copy(update=ms_update)})
    worker = CloudWorker(s, tmp_path / "cloud")
    cloud_worker.append(worker)
    worker.start()
    return s, worker, AlertReader(s), web_port


def test_model_server_outage_marks_unverified_and_recovers(
    make_settings: Callable[..., Settings], crops: Crops, tmp_path: Path, cloud_worker: list[CloudWorker]
) -> None:
    with ModelServerProcess(tmp_path / "ms", REPO_ROOT / "models") as ms:
        s, worker, reader, web_port = _worker_with_own_model_server(ms, make_settings, tmp_path, cloud_worker)
        produce(s, track_events("cam-1", 1, crops.people[0]))
        first = reader.wait_for(1, settle_s=0)
        assert first[0].verification == "verified"

        ms.stop()
        produce(s, [e for t in range(2, 6) for e in track_events("cam-1", t, crops.people[t % len(crops.people)])])
        alerts = reader.wait_for(5, settle_s=0.5)
        down = [a for a in alerts if a.track in (2, 3, 4, 5)]
        assert len(down) == 4 and all(a.verification == "unverified" and a.cloud_score is None for a in down)
        assert all(a.fused_score == a.edge_score for a in down)

        ms.start()
        verified_again = None
        for track in range(100, 130):  # a new track every second until the breaker closes again
            produce(s, track_events("cam-2", track, crops.people[0], updates=0))
            reader.wait_for(len({a.id for a in reader.alerts}) + 1, timeout_s=10, settle_s=0)
            verified_again = next((a for a in reader.alerts if a.cam == "cam-2" and a.verification == "verified"), None)
            if verified_again:
                break
            time.sleep(1.0)
        assert verified_again is not None, worker.log_tail(60)
        reader.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        opened = re.search(r"^pipeline_cloud_breaker_opened_total (\d+)", metrics, re.M)
        assert opened and int(opened.group(1)) >= 1, metrics
        assert re.search(r"^pipeline_cloud_breaker_state 0", metrics, re.M)  # closed again
        assert 'reason="model_unavailable",verification="unverified"' in metrics
        assert "pipeline_cloud_predict_batches_total" in metrics
        assert worker.stop() == 0  # SIGTERM: clean exit


def test_hold_policy_waits_for_the_model_instead_of_alerting_unverified(
    make_settings: Callable[..., Settings], crops: Crops, tmp_path: Path, cloud_worker: list[CloudWorker]
) -> None:
    # cloud.on_model_unavailable=hold: while the heavy model is down, escalated events wait
    # (their partition stalls, nothing is committed) and alert only once they are verified.
    with ModelServerProcess(tmp_path / "ms", REPO_ROOT / "models") as ms:
        s, worker, reader, web_port = _worker_with_own_model_server(
            ms, make_settings, tmp_path, cloud_worker, on_model_unavailable="hold"
        )
        produce(s, track_events("cam-1", 1, crops.people[0]))
        assert reader.wait_for(1, settle_s=0)[0].verification == "verified"

        ms.stop()
        held = [track_events("cam-1", t, crops.people[t % len(crops.people)]) for t in (2, 3)]
        produce(s, [e for evs in held for e in evs])

        def holds() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=5) as resp:
                found = re.search(r"^pipeline_cloud_verification_holds_total (\d+)", resp.read().decode(), re.M)
            return int(found.group(1)) if found else 0

        # the held events have reached the verifier and waited on the model a few times (not a sleep)
        assert wait_until(lambda: holds() >= 3, 60, 0.2), worker.log_tail(40)
        assert len(reader.alerts) == 1, "no alert while the model is down"

        ms.start()
        alerts = reader.wait_for(3, timeout_s=60, settle_s=1.0)
        late = [a for a in alerts if a.track in (2, 3)]
        assert {a.id for a in late} == {expected_id(evs) for evs in held}, worker.log_tail(60)
        assert all(a.verification == "verified" and a.cloud_score is not None for a in late)
        reader.close()
        assert worker.stop() == 0


def test_config_set_produces_a_validated_record(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    s = make_settings()
    cfg = tmp_path / "s.yaml"
    cfg.write_text(s.to_yaml())
    base = [sys.executable, "-m", "pipeline.cli", "--config", str(cfg), "config", "set"]
    ok = subprocess.run([*base, "--site", "site-a", "--camera", "cam-1", "min_score=0.45", "labels=person,car"],
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*base, "--site", "site-a", "--camera", "cam-1", "min_scor=0.4"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "unknown camera setting" in bad.stderr
    records = read_topic(s, s.kafka.config_topic, min_records=1)
    assert len(records) == 1
    rec = records[0]
    assert rec["v"] == 1 and rec["site"] == "site-a" and rec["cam"] == "cam-1"
    assert rec["config"] == {"min_score": 0.45, "labels": ["person", "car"]}
    assert abs(rec["rev"] - time.time() * 1000) < 120_000
    assert json.loads(ok.stdout.split(" ", 1)[1]) == rec
