"""Registry versions as retained chunks on the broker, for sites that reach only the broker.

:func:`push_chunks` publishes ``<prefix>/models/<name>/<version>/<index>`` (every chunk) and then
``.../manifest``, all retained at QoS 1 (:mod:`~pipeline.operators.chunk_codec`). The manifest
comes last, so an edge that sees it finds every chunk; :func:`clear_chunks` removes the manifest
first (empty retained payloads), then the chunks, so the broker does not keep every version
forever. The file is hashed before anything is published: a damaged registry file is refused,
not offered. At most ``WINDOW`` chunks await their PUBACK at a time (bounded memory here and in
the broker's queues).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from pipeline.errors import BrokerUnavailable, ConfigError
from pipeline.model_registry.registry import ModelEntry
from pipeline.mqtt_client import connect, make_client
from pipeline.operators.chunk_codec import (
    MIN_CHUNK_BYTES,
    Manifest,
    check_chunk_size,
    chunk_count,
    decode_manifest,
    encode_manifest,
    iter_chunks,
    manifest_of,
)
from pipeline.operators.schema import Rejected
from pipeline.settings import MqttSettings
from pipeline.topics import Topics

log = logging.getLogger(__name__)
WINDOW = 16
TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class PushResult:
    manifest: Manifest
    seconds: float
    topic: str  # subscription filter of the version's topics


class _Session:
    """A connected, clean-session client that knows which publishes the broker refused."""

    def __init__(self, settings: MqttSettings, purpose: str) -> None:
        self.settings = settings
        self.client = make_client(settings, f"models-{purpose}-{uuid.uuid4().hex[:8]}", max_inflight=WINDOW)
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self.refused: list[str] = []
        self.messages: dict[str, bytes] = {}
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            self._connected.set()

    def _on_publish(self, c: mqtt.Client, u: Any, mid: int, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            with self._lock:
                self.refused.append(str(reason))

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages[msg.topic] = bytes(msg.payload)

    def __enter__(self) -> _Session:
        connect(self.client, self.settings)
        if not self._connected.wait(TIMEOUT_S):
            self.close()
            raise BrokerUnavailable(f"MQTT {self.settings.host}:{self.settings.port}: not connected in {TIMEOUT_S:g} s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish_all(self, items: Iterable[tuple[str, bytes]]) -> int:
        """Publish ``(topic, payload)`` items retained at QoS 1, ``WINDOW`` awaiting PUBACK at most."""
        pending: deque[mqtt.MQTTMessageInfo] = deque()
        n = 0
        for topic, payload in items:
            if len(pending) >= WINDOW:
                self._confirm(pending.popleft())
            info = self.client.publish(topic, payload, qos=1, retain=True)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerUnavailable(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
            pending.append(info)
            n += 1
        while pending:
            self._confirm(pending.popleft())
        with self._lock:
            if self.refused:
                raise ConfigError(f"the broker refused {len(self.refused)} publish(es): {self.refused[0]} (ACL?)")
        return n

    def _confirm(self, info: mqtt.MQTTMessageInfo) -> None:
        try:
            info.wait_for_publish(TIMEOUT_S)
        except (RuntimeError, ValueError) as exc:
            raise BrokerUnavailable(f"MQTT publish not confirmed: {exc}") from exc
        if not info.is_published():
            raise BrokerUnavailable(f"MQTT publish not confirmed in {TIMEOUT_S:g} s")

    def retained(self, topic: str, wait_s: float) -> bytes | None:
        """The retained payload of ``topic`` (None: none arrived within ``wait_s`` of the SUBACK)."""
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        if not self.subscribed.wait(TIMEOUT_S):
            raise BrokerUnavailable(f"no SUBACK for {topic}")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with self._lock:
                if topic in self.messages:
                    return self.messages[topic] or None
            time.sleep(0.02)
        return None


def push_chunks(
    mqtt_settings: MqttSettings,
    entry: ModelEntry,
    path: Path,
    chunk_bytes: int,
) -> PushResult:
    """Publish ``entry``'s file as retained chunks, then its manifest."""
    if (problem := check_chunk_size(chunk_bytes)) is not None:
        raise ConfigError(problem)
    with path.open("rb") as f:
        manifest = manifest_of(entry.name, entry.version, f, chunk_bytes)
    if manifest.sha256 != entry.sha256 or manifest.size != entry.size:
        raise ConfigError(f"{path} does not match its meta.json (sha256 {manifest.sha256[:16]}…, {manifest.size} B);"
                          " the registry copy is damaged, nothing published")  # fmt: skip
    topics = Topics(mqtt_settings.topic_prefix)
    started = time.monotonic()
    with _Session(mqtt_settings, "push") as session, path.open("rb") as f:
        session.publish_all((topics.model_chunk(entry.name, entry.version, i), p) for i, p in iter_chunks(f, manifest))
        session.publish_all([(topics.model_manifest(entry.name, entry.version), encode_manifest(manifest))])
    return PushResult(manifest, time.monotonic() - started, topics.model_chunks(entry.name, entry.version))


def retained_manifest(mqtt_settings: MqttSettings, name: str, version: str, wait_s: float = 1.0) -> Manifest | None:
    """The manifest the broker keeps for ``name``/``version``, if any (and readable)."""
    topic = Topics(mqtt_settings.topic_prefix).model_manifest(name, version)
    with _Session(mqtt_settings, "read") as session:
        raw = session.retained(topic, wait_s)
    if raw is None:
        return None
    m = decode_manifest(raw)
    return None if isinstance(m, Rejected) else m


def clear_chunks(mqtt_settings: MqttSettings, name: str, version: str, size_hint: int | None = None) -> int:
    """Remove the version's retained manifest and chunks; the number of topics cleared.

    The chunk count comes from the retained manifest; without one, from ``size_hint`` (the
    registry's size) at the smallest chunk size, which covers a push with any chunk size."""
    topics = Topics(mqtt_settings.topic_prefix)
    manifest_topic = topics.model_manifest(name, version)
    with _Session(mqtt_settings, "clear") as session:
        raw = session.retained(manifest_topic, 1.0)
        manifest = decode_manifest(raw) if raw is not None else None
        if isinstance(manifest, Manifest):
            count = manifest.chunks
        elif size_hint is not None:
            count = chunk_count(size_hint, MIN_CHUNK_BYTES)
        else:
            raise ConfigError(f"no manifest on the broker for {name}@{version} and not in the registry: chunk count"
                              " unknown")  # fmt: skip
        empty = [(manifest_topic, b"")] + [(topics.model_chunk(name, version, i), b"") for i in range(count)]
        return session.publish_all(empty)
