"""A scripted camera node: publishes on MQTT exactly what the edge publishes (codec and topics
from the project: retained node and camera status, a retained snapshot JPEG, QoS 1 events)."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import cv2

from pipeline.console.feed import ConsoleFeed
from pipeline.edge_stage.snapshot import encode_snapshot
from pipeline.history.store import HistoryStore
from pipeline.metrics import Registry
from pipeline.mqtt_client import connect, make_client
from pipeline.operators.schema import Event, EventType, encode_event
from pipeline.operators.wire import (
    CameraState,
    CameraStatus,
    NodeState,
    NodeStatus,
    StatusValue,
    encode_camera_status,
    encode_node_status,
)
from pipeline.settings import SAMPLE_CLIP, Settings
from pipeline.topics import Kind, Topics

SITE, CAM = "site-c", "cam-c"
PASSWORDS = {"ada": "ada-admin-pw", "vic": "vic-viewer-pw"}


@dataclass
class ConsoleStack:
    settings: Settings
    url: str
    node: ScriptedNode
    store: HistoryStore
    feed: ConsoleFeed
    metrics: Registry


class ScriptedNode:
    def __init__(self, settings: Settings, site: str, cam: str, node: str = "node-c") -> None:
        self.settings, self.site, self.cam, self.node = settings, site, cam, node
        self.topics = Topics(settings.mqtt.topic_prefix)
        self.client = make_client(settings.mqtt, f"{settings.mqtt.topic_prefix}-{node}")
        self.client.will_set(self.topics.node_status(site, node), node_payload(site, node, "offline"), qos=1,
                             retain=True)  # fmt: skip
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self._seq = itertools.count(1)
        self._track = itertools.count(100)
        self.frames = 0

    def __enter__(self) -> ScriptedNode:
        connect(self.client, self.settings.mqtt)
        assert self._connected.wait(10), "scripted node: no MQTT connection"
        self._publish(self.topics.node_status(self.site, self.node), node_payload(self.site, self.node, "online"),
                      retain=True)  # fmt: skip
        self.publish_status()
        self.publish_snapshot()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def publish_status(self, state: CameraState = "online") -> None:
        self.frames += 250
        metrics: dict[str, StatusValue] = {
            "frames_read": self.frames,
            "outbox_depth": 3,
            "config_rev": 0,
            "model_update": "idle",
            "model_previous": None,
        }
        status = CameraStatus(
            self.site,
            self.cam,
            state,
            "",
            "centernet@fp32",
            metrics,
            int(time.time() * 1000),
            self.node,
        )
        self._publish(self.topics.camera(self.site, self.cam, Kind.STATUS), encode_camera_status(status), retain=True)

    def publish_snapshot(self) -> None:
        cap = cv2.VideoCapture(str(SAMPLE_CLIP))
        ok, frame = cap.read()
        cap.release()
        assert ok
        jpeg = encode_snapshot(frame, 48 * 1024)
        assert jpeg is not None
        self._publish(self.topics.camera(self.site, self.cam, Kind.SNAPSHOT), jpeg, retain=True)

    def open_track(self, box: tuple[float, float, float, float]) -> int:
        """A track that started and has not ended (a person still in view)."""
        track = next(self._track)
        ev = Event(id=f"{self.cam}-{track}-open-{time.time_ns()}", site=self.site, cam=self.cam,
                   ts=int(time.time() * 1000), seq=next(self._seq), type="track_started", track=track, label="person",
                   score=0.4, box=box, det="scripted@1")  # fmt: skip
        self._publish(self.topics.camera(self.site, self.cam, Kind.EVENTS), encode_event(ev))
        return track

    def track(self, boxes: list[tuple[float, float, float, float]], *, crop: str | None = None,
              step_ms: int = 200) -> tuple[int, list[Event]]:  # fmt: skip
        """One track through ``boxes`` (started, updated..., ended), published now; returns its id."""
        track = next(self._track)
        now = int(time.time() * 1000)
        updated: list[EventType] = ["track_updated"] * (len(boxes) - 2)
        types: list[EventType] = ["track_started", *updated, "track_ended"]
        events = [
            Event(id=f"{self.cam}-{track}-{i}-{now}", site=self.site, cam=self.cam, ts=now + i * step_ms,
                  seq=next(self._seq), type=t, track=track, label="person", score=0.9, box=box, det="scripted@1",
                  crop=crop if i == 0 else None)
            for i, (t, box) in enumerate(zip(types, boxes, strict=True))
        ]  # fmt: skip
        topic = self.topics.camera(self.site, self.cam, Kind.EVENTS)
        for ev in events:
            self._publish(topic, encode_event(ev))
        return track, events


def node_payload(site: str, node: str, state: NodeState) -> bytes:
    """What pipeline/edge_stage/publisher.py publishes (retained, and as the Last Will)."""
    return encode_node_status(NodeStatus(site, node, state, int(time.time() * 1000)))


def crossing_boxes(steps: int = 8) -> list[tuple[float, float, float, float]]:
    """A person walking left to right across the middle of the frame (bottom centre y = 0.7)."""
    out = []
    for i in range(steps):
        x = 0.2 + 0.6 * i / (steps - 1)
        out.append((round(x - 0.04, 4), 0.4, round(x + 0.04, 4), 0.7))
    return out
