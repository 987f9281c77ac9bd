"""Hard examples: a real edge with a deliberately weak threshold (min_score 0.05, junk events),
its events through Kafka into the real cloud worker (``pipeline cloud`` subprocess, real model
server); the disagreements become a dataset, and the report and COCO export match it."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.cli import main as cli_main
from pipeline.cloud_stage.escalation import should_escalate
from pipeline.edge_stage.runner import run_edge
from pipeline.hard_examples.report import confusion_pairs, estimated_rate, load_records
from pipeline.hard_examples.selection import sampled
from pipeline.local_stack.pipeline_service import PipelineService
from pipeline.local_stack.ports import free_port
from pipeline.operators.schema import encode_event
from pipeline.settings import Settings
from pipeline.testing import wait_until
from tests.learning_loop.loop_helpers import Listener

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RATE = 0.5


def test_disagreements_become_a_dataset_and_a_report(
    make_settings: Callable[..., Settings], model_server: object, loop_clip: Path, tmp_path: Path
) -> None:
    from kafka import KafkaProducer

    dataset = tmp_path / "dataset"
    s = make_settings(
        edge={"site": "s1", "detector": "centernet-int8", "final_ack_wait_s": 1.0, "detector_threads": 2,
              "cameras": [{"id": "cam-w", "source": str(loop_clip), "min_score": 0.05, "detect_fps": 5,
                           "labels": ["person", "car", "bicycle", "handbag", "backpack", "umbrella"]}]},
        cloud={"web_enabled": False, "web_port": free_port(), "escalation": "track_started"},
        model_server={"max_wait_ms": 20, "timeout_s": 10.0},
        hard_examples={"enabled": True, "dataset_dir": str(dataset), "agreement_rate": RATE,
                       "max_per_camera_day": 1000},
    )  # fmt: skip
    config = tmp_path / "cloud.yaml"
    config.write_text(s.to_yaml())
    worker = PipelineService("cloud", tmp_path / "cloud", config, ["cloud"], start_timeout_s=120)
    listener = Listener(s)
    try:
        worker.start()
        run_edge(s, threading.Event())  # the weak edge: 4 s of people walking, junk at score 0.05
        events = listener.cam_events("cam-w")
        started = [e for e in events if e.type == "track_started" and e.crop]
        escalated = [e for e in events if should_escalate(e, "track_started", 0.0)]  # + better views
        assert len(started) >= 5 and min(e.score for e in started) < 0.35, "the weak edge should report junk"
        producer = KafkaProducer(**s.kafka.client_kwargs(), acks="all")
        for ev in events:
            producer.send(s.kafka.events_topic, key=ev.cam.encode(), value=encode_event(ev))
        producer.flush(10)
        producer.close(5)

        def recorded() -> int:
            return len(load_records(dataset)) if (dataset / "labels").is_dir() else 0

        # every crop-carrying event is escalated; wait until the dataset stops growing
        assert wait_until(lambda: recorded() > 0, 90), worker.log_tail(40)
        last, still = -1, 0
        while still < 6:
            time.sleep(0.5)
            n = recorded()
            still, last = (still + 1, n) if n == last else (0, n)
    finally:
        listener.close()
        worker.stop()

    records = load_records(dataset)
    by_id = {e.id: e for e in escalated}
    assert {r["id"] for r in records} <= set(by_id) and len({r["id"] for r in records}) == len(records)
    kinds = {r["kind"] for r in records}
    assert "contradicted" in kinds, [r["kind"] for r in records]
    for r in records:
        ev = by_id[r["id"]]
        assert r["edge"]["det"] == ev.det == "centernet-int8@human-models-3.0.4"
        assert r["edge"]["label"] == ev.label and r["edge"]["score"] == ev.score and r["cam"] == "cam-w"
        assert r["cloud"]["model"].startswith("centernet@") and r["cloud"]["score"] is not None
        assert r["cloud"]["verification"] == ("contradicted" if r["kind"] == "contradicted" else "verified")
        img = cv2.imread(str(dataset / r["image"]))
        assert img is not None and img.shape[:2] == (r["height"], r["width"])
        if r["kind"] == "agreement":
            assert sampled(r["id"], RATE)
        if r["kind"] == "missed_label":
            assert r["missed_labels"] and ev.label not in r["missed_labels"]
    # privacy: a person crop is stored blurred (it differs from the edge's crop in the head area)
    person = next((r for r in records if r["edge"]["label"] == "person"), None)
    if person is not None:
        crop = by_id[person["id"]].crop
        assert crop is not None  # escalated events carry their crop
        original = cv2.imdecode(np.frombuffer(base64.b64decode(crop), np.uint8), cv2.IMREAD_COLOR)
        stored = cv2.imread(str(dataset / person["image"]))
        h = original.shape[0]
        head = slice(h // 12, h // 3)
        assert float(np.abs(original[head].astype(int) - stored[head].astype(int)).mean()) > 1.0

    out = tmp_path / "report"
    report = ["--config", str(config), "report", "hard-examples", "--dataset", str(dataset), "--out", str(out)]
    assert cli_main(report) == 0
    assert (out / "hard_examples.png").stat().st_size > 1000 and (out / "report.md").is_file()
    rep = json.loads((out / "report.json").read_text())
    assert rep["examples"] == len(records)
    (group,) = rep["groups"]
    assert (group["cam"], group["model"]) == ("cam-w", "centernet-int8@human-models-3.0.4")
    d = sum(r["kind"] in ("contradicted", "missed_label") for r in records)
    a = sum(r["kind"] == "agreement" for r in records)
    (point,) = group["series"]
    assert (point["disagreements"], point["agreements_sampled"], point["examples"]) == (d, a, len(records))
    assert point["disagreement_rate"] == estimated_rate(d, a, RATE)
    pairs: dict[tuple[str, str], int] = {}
    for r in records:
        for p in confusion_pairs(r):
            pairs[p] = pairs.get(p, 0) + 1
    top = group["confused"][0]
    assert top["count"] == max(pairs.values()) and pairs[(top["edge"], top["cloud"])] == top["count"]

    coco_path = tmp_path / "coco.json"
    export = ["--config", str(config), "report", "coco", "--dataset", str(dataset), "--out", str(coco_path)]
    assert cli_main(export) == 0
    coco = json.loads(coco_path.read_text())
    assert len(coco["images"]) == len(records) and len(coco["categories"]) == 80

    # Recalibration: the weak edge's 0.05 threshold let junk through that the cloud contradicted;
    # the suggested threshold is higher, scores better against the cloud's verdicts, and is
    # published as camera config on the Kafka config topic (the path `pipeline config set` takes).
    th_out = tmp_path / "thresholds"
    recal = ["--config", str(config), "report", "thresholds", "--dataset", str(dataset), "--out", str(th_out),
             "--min-examples", "5", "--publish", "--site", "s1"]  # fmt: skip
    assert cli_main(recal) == 0
    (sug,) = json.loads((th_out / "thresholds.json").read_text())
    assert sug["cam"] == "cam-w" and sug["contradicted"] == sum(r["kind"] == "contradicted" for r in records)
    assert sug["suggested"] is not None and sug["suggested"] > 0.05, sug["reason"]
    assert sug["at_suggested"]["f"] > sug["at_lowest"]["f"]
    assert (th_out / "thresholds.png").stat().st_size > 1000
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**s.kafka.client_kwargs(), enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        parts = [TopicPartition(s.kafka.config_topic, p) for p in consumer.partitions_for_topic(s.kafka.config_topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        configs = [json.loads(m.value) for m in consumer if m.key == b"s1/cam-w"]  # key = site/cam
    finally:
        consumer.close()
    assert configs and configs[-1]["site"] == "s1" and configs[-1]["config"] == {"min_score": sug["suggested"]}
