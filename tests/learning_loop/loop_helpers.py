"""Helpers of the learning-loop tests: a registry with real model versions, short clips, an MQTT
listener that plays the bridge's acks and keeps every camera's status."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.edge_stage.detectors.tflite_centernet import MODELS_DIR
from pipeline.model_registry.registry import ModelRegistry
from pipeline.operators.schema import Acks, Event, decode_event, encode_acks
from pipeline.settings import Settings
from pipeline.topics import Kind, Topics

INT8 = MODELS_DIR / "centernet_int8.tflite"
FP32 = MODELS_DIR / "centernet_fp32.tflite"
DEFAULT_INT8_TAG = "centernet-int8@human-models-3.0.4"


def registry_with_versions(root: Path) -> ModelRegistry:
    """centernet@2 = a copy of the shipped int8 file, centernet@3 = the fp32 file."""
    reg = ModelRegistry(root)
    work = root.parent / f"{root.name}-src"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INT8, work / "centernet.tflite")
    reg.add(work / "centernet.tflite", "centernet", "2")
    shutil.copyfile(FP32, work / "centernet_fp32.tflite")
    reg.add(work / "centernet_fp32.tflite", "centernet", "3")
    return reg


class Listener:
    """Subscribes to ``<prefix>/#``: events (acked like the bridge when ``ack``), statuses."""

    def __init__(self, settings: Settings, ack: bool = True) -> None:
        m = settings.mqtt
        self.topics = Topics(m.topic_prefix)
        self.ack = ack
        self.lock = threading.Lock()
        self.events: list[Event] = []
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"listener-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)  # fmt: skip
        ready = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{m.topic_prefix}/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(m.host, m.port)
        self.client.loop_start()
        assert ready.wait(10), "listener did not subscribe"

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = self.topics.parse_camera(msg.topic)
        if parsed is None:
            return
        site, cam, kind = parsed
        if kind == Kind.STATUS:
            with self.lock:
                self.statuses.setdefault(cam, []).append(json.loads(msg.payload))
        elif kind == Kind.EVENTS:
            ev = decode_event(bytes(msg.payload))
            assert isinstance(ev, Event), ev
            with self.lock:
                self.events.append(ev)
            if self.ack:
                c.publish(self.topics.camera(site, cam, Kind.ACKS),
                          encode_acks(Acks(cam=cam, ranges=((ev.seq, ev.seq),))), qos=1)  # fmt: skip

    def cam_events(self, cam: str) -> list[Event]:
        with self.lock:
            return sorted({e.seq: e for e in self.events if e.cam == cam}.values(), key=lambda e: e.seq)

    def status(self, cam: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.statuses.get(cam, [{}])[-1])

    def any_status(self, cam: str, pred: Callable[[dict[str, Any]], bool]) -> bool:
        with self.lock:
            return any(pred(s) for s in self.statuses.get(cam, []))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
