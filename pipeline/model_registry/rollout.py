"""Staged rollout: which cameras get a model version, and the config records that tell them.

- ``--cameras a,b``: exactly those cameras;
- ``--percent P``: the cameras whose bucket ``sha256(camera id) mod 100`` is below P, among the
  given ``--cameras`` or, without them, the cameras that have a retained status on MQTT
  (``<prefix>/<site>/+/status``). The bucket depends on the camera id only, so the same cameras
  are always the first ones (canaries), and 50 % contains the 10 % set.

The records are ordinary config records (``{"v":1,"site","cam","rev","config":{"model":{...}}}``),
produced to the Kafka config topic exactly like ``pipeline config set``: the bridge forwards them
retained to ``<prefix>/<site>/<cam>/config`` and the edge picks them up live. ``config: {"model":
null}`` sends a camera back to its packaged model.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from typing import Any

from pipeline.errors import BrokerUnavailable
from pipeline.mqtt_client import paho_keepalive
from pipeline.operators.wire import CameraStatus, Rejected, decode_camera_status
from pipeline.settings import ModelRef, Settings
from pipeline.topics import Kind, Topics


def bucket(camera: str) -> int:
    """Deterministic 0..99 bucket of a camera id."""
    return int.from_bytes(hashlib.sha256(camera.encode()).digest()[:8], "big") % 100


def select_cameras(cameras: list[str], percent: float | None) -> list[str]:
    if percent is None:
        return sorted(set(cameras))
    return sorted(c for c in set(cameras) if bucket(c) < percent)


def model_config(ref: ModelRef | None) -> dict[str, Any]:
    return {"model": None if ref is None else ref.model_dump(mode="json")}


def discover_cameras(settings: Settings, site: str, wait_s: float = 2.0) -> dict[str, CameraStatus]:
    """Retained camera statuses of a site: camera id -> its status (``model``, metrics)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    m = settings.mqtt
    topics = Topics(m.topic_prefix)
    found: dict[str, CameraStatus] = {}
    lock = threading.Lock()
    subscribed = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id=f"models-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)  # fmt: skip
    if m.username:
        client.username_pw_set(m.username, m.password.get_secret_value() if m.password else None)
    if m.tls_ca_file:
        client.tls_set(ca_certs=str(m.tls_ca_file))
        client.tls_insecure_set(m.tls_insecure)

    def on_connect(c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        c.subscribe(topics.all_cameras(Kind.STATUS, site), qos=1)

    def on_subscribe(c: mqtt.Client, u: Any, mid: int, rcs: Any, p: Any) -> None:
        subscribed.set()

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = topics.parse_camera(msg.topic)
        status = decode_camera_status(bytes(msg.payload))
        if parsed is not None and not isinstance(status, Rejected):
            with lock:
                found[parsed[1]] = status

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(m.host, m.port, keepalive=paho_keepalive(m.keepalive_s))
    except OSError as exc:
        raise BrokerUnavailable(f"MQTT {m.host}:{m.port}: {exc}") from exc
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise BrokerUnavailable(f"MQTT {m.host}:{m.port}: no SUBACK")
        time.sleep(wait_s)  # retained messages arrive right after the SUBACK
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return dict(found)
