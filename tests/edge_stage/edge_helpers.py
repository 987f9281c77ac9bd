"""Helpers of the edge stage tests: settings wired to a Mosquitto (no Kafka needed), short clips
cut from the sample video, and an MQTT collector that can play the bridge (acks)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.edge_stage.detectors.tflite_centernet import MODELS_DIR
from pipeline.operators.schema import Acks, Event, decode_event, encode_acks
from pipeline.settings import SAMPLE_CLIP, Settings
from pipeline.testing import wait_until
from pipeline.topics import Kind, Topics

HAVE_CENTERNET = (MODELS_DIR / "centernet_fp32.tflite").is_file()
needs_centernet = pytest.mark.skipif(not HAVE_CENTERNET, reason="centernet_fp32.tflite not built yet")
needs_clip = pytest.mark.skipif(not SAMPLE_CLIP.is_file(), reason="samples/vtest_clip.mp4 missing")
FAST_DETECTOR = "centernet" if HAVE_CENTERNET else "hog"


MakeEdgeSettings = Callable[..., Settings]


def edge_settings_for(
    host: str, port: int, tmp_path: Path, cameras: list[dict[str, Any]] | None = None, **edge: Any
) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    edge_section: dict[str, Any] = {
        "node_id": f"{prefix}-node",
        "site": "s1",
        "outbox_path": str(tmp_path / f"{prefix}-outbox.sqlite"),
        "detector": FAST_DETECTOR,
        "final_ack_wait_s": 5.0,
        "ack_timeout_s": 30.0,
        "cameras": cameras or [{"id": "cam-1", "source": str(SAMPLE_CLIP)}],
    }
    edge_section.update(edge)
    return Settings(mqtt={"host": host, "port": port, "topic_prefix": prefix}, edge=edge_section)


@dataclass
class Collector:
    """Subscribes to a settings' topics; with ``ack=True`` it acknowledges every event like the bridge."""

    settings: Settings
    ack: bool = False
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: mqtt.Client | None = None

    def start(self) -> Collector:
        m = self.settings.mqtt
        self.topics = Topics(m.topic_prefix)
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        ready = threading.Event()

        def on_connect(c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
            c.subscribe(f"{m.topic_prefix}/#", qos=1)

        def on_subscribe(c: mqtt.Client, u: Any, mid: int, rcs: Any, p: Any) -> None:
            ready.set()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(m.host, m.port)
        self.client.loop_start()
        assert ready.wait(10), "collector did not subscribe"
        return self

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
        parsed = self.topics.parse_camera(msg.topic)
        if parsed is None or parsed[2] != Kind.EVENTS:
            return
        ev = decode_event(bytes(msg.payload))
        assert isinstance(ev, Event), ev
        with self.lock:
            self.events.append(ev)
        if self.ack:
            ack = Acks(cam=ev.cam, ranges=((ev.seq, ev.seq),))
            c.publish(self.topics.camera(ev.site, ev.cam, Kind.ACKS), encode_acks(ack), qos=1)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        assert self.client is not None
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def payloads(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
        return wait_until(pred, timeout)

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def detect_in_threads(detectors: list[Any], frames: list[Any]) -> dict[int, list[list[tuple[str, float]]]]:
    """Each detector on every frame, all at once, one thread per detector (cameras sharing a pool):
    detector index -> per frame, (label, score rounded to 3 places) of each detection."""
    got: dict[int, list[list[tuple[str, float]]]] = {}

    def camera(i: int) -> None:
        got[i] = [[(d.label, round(d.score, 3)) for d in detectors[i].detect(f)] for f in frames]

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(len(detectors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return got


def clip_frames(start: int, count: int, step: int = 2) -> list[Any]:
    """``count`` frames of the sample clip from ``start``, every ``step``-th (BGR)."""
    import cv2

    cap = cv2.VideoCapture(str(SAMPLE_CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    out = []
    for i in range(count * step):
        ok, frame = cap.read()
        assert ok, f"the sample clip ends before frame {start + i}"
        if i % step == 0:
            out.append(frame)
    cap.release()
    return out
