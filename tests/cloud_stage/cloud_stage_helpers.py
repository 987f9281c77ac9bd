"""Cloud-stage test helpers: real person crops, the worker as a subprocess, Kafka I/O."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from kafka import KafkaConsumer, KafkaProducer

from pipeline.cloud_stage.alerting import incident_alert_id
from pipeline.cloud_stage.inference_client import InferenceClient
from pipeline.cloud_stage.verification import centre_region, cloud_score, decode_crop, letterbox
from pipeline.local_stack.pipeline_service import PipelineService
from pipeline.local_stack.ports import free_port
from pipeline.operators.coco import label_of
from pipeline.operators.rules import camera_key
from pipeline.operators.schema import Alert, Event, EventType, decode_alert, encode_event
from pipeline.settings import SAMPLE_CLIP, ModelServerSettings, Settings


@dataclass(frozen=True)
class Crops:
    people: list[str]  # base64 JPEGs that the heavy model confirms as a person (cloud score >= 0.4)
    background: str  # base64 JPEG with no person in it


def _jpeg_b64(rgb: npt.NDArray[np.uint8]) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def decoded_crop(crop: str) -> npt.NDArray[np.uint8]:
    """decode_crop of a crop the test made (a valid JPEG)."""
    rgb = decode_crop(crop)
    assert rgb is not None
    return rgb


async def find_crops(address: str) -> Crops:
    client = InferenceClient(ModelServerSettings(address=address, timeout_s=30))
    size = (await client.connect()).input_size
    cap = cv2.VideoCapture(str(SAMPLE_CLIP))
    frames: list[npt.NDArray[np.uint8]] = []
    for i in range(60):
        ok, bgr = cap.read()
        if not ok:
            break
        if i % 20 == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.uint8, copy=False))
    cap.release()
    assert frames, f"cannot read {SAMPLE_CLIP}"
    candidates: list[str] = []
    background = None
    for rgb in frames:
        lb = letterbox(rgb, size)
        dets = (await client.predict(lb.image[None]))[0]
        h, w = rgb.shape[:2]
        people = [d for d in dets if label_of(d[5]) == "person" and d[4] >= 0.4]
        for x1, y1, x2, y2, _, _ in people:
            fx1, fy1 = (x1 - lb.pad_x) / lb.scale, (y1 - lb.pad_y) / lb.scale
            fx2, fy2 = (x2 - lb.pad_x) / lb.scale, (y2 - lb.pad_y) / lb.scale
            mx, my = (fx2 - fx1) * 0.2, (fy2 - fy1) * 0.2
            cx1, cy1 = int(max(0, fx1 - mx)), int(max(0, fy1 - my))
            cx2, cy2 = int(min(w, fx2 + mx)), int(min(h, fy2 + my))
            if cx2 - cx1 >= 16 and cy2 - cy1 >= 32:
                candidates.append(_jpeg_b64(rgb[cy1:cy2, cx1:cx2]))
        if background is None:
            background = _jpeg_b64(rgb[:96, :96])  # top-left corner: building, no people
    # keep the crops the model confirms on their own (what the worker will see)
    people_crops = []
    for crop in candidates:
        lb = letterbox(decoded_crop(crop), size)
        dets = (await client.predict(lb.image[None]))[0]
        if cloud_score(dets, "person", centre_region(lb, 0.5)) >= 0.4:
            people_crops.append(crop)
    assert background is not None
    lb = letterbox(decoded_crop(background), size)
    bg_score = cloud_score((await client.predict(lb.image[None]))[0], "person", centre_region(lb, 0.5))
    assert bg_score < 0.25, f"background crop looks like a person ({bg_score})"
    await client.close()
    assert len(people_crops) >= 3, f"only {len(people_crops)} confirmed person crops"
    return Crops(people_crops, background)


# --------------------------------------------------------------------------- worker


class CloudWorker(PipelineService):
    """``python -m pipeline.cli --config FILE cloud`` as a child process."""

    def __init__(self, settings: Settings, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "cloud.yaml"
        config.write_text(settings.to_yaml())
        super().__init__("cloud", data_dir, config, ["cloud"], start_timeout_s=90)

    def diagnose(self, lines: int = 400) -> str:
        """The log tail after asking the worker for its task stacks (SIGUSR1): for failure messages."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGUSR1)
            time.sleep(1.0)
        return self.log_tail(lines)


def worker_settings(make_settings: Callable[..., Settings], **cloud: object) -> Settings:
    settings: Settings = make_settings(
        cloud={"web_enabled": False, "web_port": free_port(), **cloud},
        model_server={"max_wait_ms": 20, "breaker_failures": 2, "breaker_reset_s": 2.0, "timeout_s": 5.0},
    )
    return settings


# --------------------------------------------------------------------------- Kafka I/O

_ids = itertools.count(1)


def track_events(
    cam: str, track: int, crop: str | None, *, label: str = "person", score: float = 0.9, updates: int = 3,
    site: str = "site-t",
) -> list[Event]:  # fmt: skip
    now = int(time.time() * 1000)
    updated: list[EventType] = ["track_updated"] * updates
    types: list[EventType] = ["track_started", *updated, "track_ended"]
    return [
        Event(
            id=f"{cam}-{track}-{i}-{next(_ids)}", site=site, cam=cam, ts=now + 200 * i, seq=next(_ids),
            type=t, track=track, label=label, score=score, box=(0.4, 0.3, 0.5, 0.7), det="test@1",
            crop=crop if i == 0 else None,
        )
        for i, t in enumerate(types)
    ]  # fmt: skip


def produce(settings: Settings, events: list[Event], extra: Sequence[bytes] = ()) -> None:
    producer = KafkaProducer(**settings.kafka.client_kwargs(), acks="all")
    for ev in events:
        producer.send(settings.kafka.events_topic, key=ev.cam.encode(), value=encode_event(ev),
                      headers=[("event_id", ev.id.encode()), ("site", ev.site.encode())])  # fmt: skip
    for raw in extra:
        producer.send(settings.kafka.events_topic, key=b"cam-x", value=raw)
    producer.flush(10)
    producer.close(5)


class AlertReader:
    """Reads the alerts topic from the start; collects decoded alerts."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.consumer = KafkaConsumer(
            topic or settings.kafka.alerts_topic, **settings.kafka.client_kwargs(),
            auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=500,
        )  # fmt: skip
        self.alerts: list[Alert] = []
        self.raw: list[bytes] = []

    def poll(self) -> None:
        for msg in self.consumer:
            self.raw.append(msg.value)
            a = decode_alert(msg.value)
            assert isinstance(a, Alert), a
            self.alerts.append(a)

    def wait_for(self, n_distinct: int, timeout_s: float = 60.0, settle_s: float = 2.0) -> list[Alert]:
        """Wait until ``n_distinct`` alert ids arrived, then a little longer for extras."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len({a.id for a in self.alerts}) < n_distinct:
            self.poll()
        end = time.monotonic() + settle_s
        while time.monotonic() < end:
            self.poll()
        return self.alerts

    def close(self) -> None:
        self.consumer.close()


def read_topic(settings: Settings, topic: str, min_records: int = 1, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    reader = AlertReader(settings, topic)
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(out) < min_records:
        for msg in reader.consumer:
            out.append(json.loads(msg.value))
    reader.close()
    return out


RULE = {"id": "person-present", "kind": "presence", "labels": ["person"], "min_score": 0.5}


def expected_id(events: list[Event]) -> str:
    """Presence fires on the track's first event (its crop verifies it)."""
    first = events[0]
    cam = camera_key(first.site, first.cam)
    return incident_alert_id("person-present", first.site, first.cam, f"person-present|{cam}|{first.track}", first.ts)
