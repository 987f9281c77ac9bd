"""Every payload on every topic, and where its codec lives. Import codecs from here.

Topics are MQTT ``<prefix>/...`` or the Kafka topic named in settings:

- ``<site>/<cam>/events``, Kafka events: Event, ``encode_event``/``decode_event`` (schema.py)
- ``<site>/<cam>/alerts``, ``alerts``, Kafka alerts: Alert, ``encode_alert``/``decode_alert`` (schema.py)
- ``<site>/<cam>/acks``: Acks, ``encode_acks``/``decode_acks`` (schema.py)
- ``<site>/<cam>/status`` (retained): CameraStatus, ``encode_camera_status``/``decode_camera_status``
- ``<site>/nodes/<node>/status`` (retained, Last Will): NodeStatus, ``encode_node_status``/``decode_node_status``
- ``<site>/<cam>/config`` (retained), Kafka config: ConfigUpdate, ``encode_config``/``decode_config``
- Kafka dead letters (bridge and cloud): DeadLetter, ``encode_dead_letter``/``decode_dead_letter``
- ``models/<name>/<version>/...`` (retained): chunks and manifest, ``pipeline/operators/chunk_codec.py``

All JSON payloads are compact UTF-8 objects with a schema version ``v``; every decoder returns
:class:`Rejected` (a stable ``reason`` code and a detail) instead of raising, and refuses unknown
fields. States are ``Literal`` types, so a state the contract does not list is a type error where
it is published and a ``bad_field`` where it is read. ``docs/CONTRACTS.md`` describes the same.

Events, alerts and acks stay in :mod:`pipeline.operators.schema` (their codecs are the hot path,
profiled there) and are re-exported here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from pipeline.operators.schema import (
    _ID_RE,
    DEFAULT_MAX_BYTES,
    MAX_TS_MS,
    SCHEMA_VERSION,
    Acks,
    Alert,
    Event,
    Rejected,
    _Bad,
    _check_keys,
    _decode,
    _dumps,
    _int,
    _str,
    decode_acks,
    decode_alert,
    decode_event,
    encode_acks,
    encode_alert,
    encode_event,
)

__all__ = [
    "CAMERA_STATES",
    "NODE_STATES",
    "Acks",
    "Alert",
    "CameraState",
    "CameraStatus",
    "ConfigUpdate",
    "DeadLetter",
    "DeadLetterSource",
    "Event",
    "NodeState",
    "NodeStatus",
    "Rejected",
    "decode_acks",
    "decode_alert",
    "decode_camera_status",
    "decode_config",
    "decode_dead_letter",
    "decode_event",
    "decode_node_status",
    "encode_acks",
    "encode_alert",
    "encode_camera_status",
    "encode_config",
    "encode_dead_letter",
    "encode_event",
    "encode_node_status",
]

CameraState = Literal["starting", "online", "reconnecting", "failed", "offline"]
CAMERA_STATES: Final = frozenset(get_args(CameraState))
NodeState = Literal["online", "offline"]
NODE_STATES: Final = frozenset(get_args(NodeState))
DeadLetterSource = Literal["mqtt", "kafka"]
DEAD_LETTER_SOURCES: Final = frozenset(get_args(DeadLetterSource))

StatusValue = str | int | float | bool | None
MAX_REASON: Final = 500  # characters of a status reason or dead-letter detail
MAX_CONFIG_BYTES: Final = 64 * 1024


def _text(obj: Mapping[str, Any], key: str, max_len: int = MAX_REASON) -> str:
    """A free-text field (may be empty)."""
    v = obj[key]
    if not isinstance(v, str) or len(v) > max_len:
        raise _Bad("bad_field", f"{key}={v!r:.60}")
    return v


def _choice(obj: Mapping[str, Any], key: str, allowed: frozenset[str]) -> Any:
    v = obj[key]
    if not isinstance(v, str) or v not in allowed:  # (a list is unhashable: found by Hypothesis)
        raise _Bad("bad_field", f"{key}={v!r:.60} not in {sorted(allowed)}")
    return v


# --------------------------------------------------------------------------- camera status


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """A camera's health, its model and a snapshot of its counters; retained, re-sent on reconnect."""

    site: str
    cam: str
    state: CameraState
    reason: str
    model: str  # detector name@version in use
    metrics: Mapping[str, StatusValue] = field(default_factory=dict)
    ts: int = 0  # when it was published, epoch ms
    # The node that runs the camera: the console shows it offline as soon as that node's Last Will
    # says so. Optional on the wire ("" when absent: statuses retained by older nodes).
    node: str = ""
    v: int = SCHEMA_VERSION


def encode_camera_status(s: CameraStatus) -> bytes:
    return _dumps({"v": s.v, "site": s.site, "cam": s.cam, "node": s.node, "state": s.state,
                   "reason": s.reason[:MAX_REASON], "model": s.model, "metrics": dict(s.metrics),
                   "ts": s.ts})  # fmt: skip


def _metrics(v: Any) -> dict[str, StatusValue]:
    if not isinstance(v, dict) or len(v) > 200:
        raise _Bad("bad_field", "metrics must be an object of at most 200 entries")
    for key, value in v.items():
        if not isinstance(value, str | int | float | bool | None) or (isinstance(value, str) and len(value) > 500):
            raise _Bad("bad_field", f"metrics.{key}={value!r:.60}")
    return v


def _build_camera_status(o: dict[str, Any]) -> CameraStatus:
    _check_keys(o, frozenset({"v", "site", "cam", "state", "reason", "model", "metrics", "ts"}), frozenset({"node"}))
    node = o.get("node", "")
    if (node != "" and not isinstance(node, str)) or (isinstance(node, str) and node and not _ID_RE.match(node)):
        raise _Bad("bad_field", f"node={node!r:.60}")
    return CameraStatus(
        site=_str(o, "site"), cam=_str(o, "cam"), state=_choice(o, "state", CAMERA_STATES),
        reason=_text(o, "reason"), model=_text(o, "model", 200), metrics=_metrics(o["metrics"]),
        ts=_int(o, "ts", 0, MAX_TS_MS), node=node, v=o["v"],
    )  # fmt: skip


def decode_camera_status(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> CameraStatus | Rejected:
    return _decode(raw, max_bytes, _build_camera_status)


# --------------------------------------------------------------------------- node status


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A camera node's liveness: ``online`` while connected, ``offline`` (also its Last Will)."""

    site: str
    node: str
    state: NodeState
    ts: int
    v: int = SCHEMA_VERSION


def encode_node_status(s: NodeStatus) -> bytes:
    return _dumps({"v": s.v, "site": s.site, "node": s.node, "state": s.state, "ts": s.ts})


def _build_node_status(o: dict[str, Any]) -> NodeStatus:
    _check_keys(o, frozenset({"v", "site", "node", "state", "ts"}), frozenset())
    return NodeStatus(site=_str(o, "site"), node=_str(o, "node"), state=_choice(o, "state", NODE_STATES),
                      ts=_int(o, "ts", 0, MAX_TS_MS), v=o["v"])  # fmt: skip


def decode_node_status(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> NodeStatus | Rejected:
    return _decode(raw, max_bytes, _build_node_status)


# --------------------------------------------------------------------------- camera config


@dataclass(frozen=True, slots=True)
class ConfigUpdate:
    """Cloud -> edge: partial camera settings, revision ``rev`` (newer revisions win).

    Only the envelope is checked here; the edge validates ``config`` against its settings model
    (:mod:`pipeline.edge_stage.config_sync`), where the fields are defined."""

    site: str
    cam: str
    rev: int
    config: Mapping[str, Any]
    v: int = SCHEMA_VERSION


def encode_config(c: ConfigUpdate) -> bytes:
    return _dumps({"v": c.v, "site": c.site, "cam": c.cam, "rev": c.rev, "config": dict(c.config)})


def _build_config(o: dict[str, Any]) -> ConfigUpdate:
    _check_keys(o, frozenset({"v", "site", "cam", "rev", "config"}), frozenset())
    config = o["config"]
    if not isinstance(config, dict):
        raise _Bad("bad_field", "config must be an object")
    return ConfigUpdate(site=_str(o, "site"), cam=_str(o, "cam"), rev=_int(o, "rev"), config=config, v=o["v"])


def decode_config(raw: bytes, max_bytes: int = MAX_CONFIG_BYTES) -> ConfigUpdate | Rejected:
    return _decode(raw, max_bytes, _build_config)


# --------------------------------------------------------------------------- dead letters


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused record: why, from where, and at most a cap of its bytes (``size`` is the whole)."""

    reason: str
    detail: str
    source: DeadLetterSource
    topic: str  # where it came from (also the Kafka key)
    ts: int  # when it was refused, epoch ms
    payload: bytes  # the first ``cap`` bytes of the original
    size: int  # the original's length
    v: int = SCHEMA_VERSION

    @property
    def truncated(self) -> bool:
        return len(self.payload) < self.size


def dead_letter(
    *, reason: str, detail: str, source: DeadLetterSource, topic: str, payload: bytes, now_ms: int, cap: int
) -> DeadLetter:
    """The dead letter of ``payload`` (kept up to ``cap`` bytes)."""
    return DeadLetter(reason, detail[:MAX_REASON], source, topic, now_ms, payload[:cap], len(payload))


def encode_dead_letter(d: DeadLetter) -> bytes:
    return _dumps({"v": d.v, "reason": d.reason, "detail": d.detail[:MAX_REASON], "source": d.source,
                   "topic": d.topic, "ts": d.ts, "payload_b64": base64.b64encode(d.payload).decode("ascii"),
                   "size": d.size, "truncated": d.truncated})  # fmt: skip


def _build_dead_letter(o: dict[str, Any]) -> DeadLetter:
    keys = {"v", "reason", "detail", "source", "topic", "ts", "payload_b64", "size", "truncated"}
    _check_keys(o, frozenset(keys), frozenset())
    try:
        payload = base64.b64decode(o["payload_b64"], validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise _Bad("bad_field", f"payload_b64: {exc}") from None
    d = DeadLetter(reason=_str(o, "reason"), detail=_text(o, "detail"),
                   source=_choice(o, "source", DEAD_LETTER_SOURCES), topic=_text(o, "topic", 300),
                   ts=_int(o, "ts", 0, MAX_TS_MS), payload=payload, size=_int(o, "size"), v=o["v"])  # fmt: skip
    if d.size < len(payload) or o["truncated"] is not d.truncated:
        raise _Bad("bad_field", f"size={d.size} truncated={o['truncated']!r} for {len(payload)} bytes kept")
    return d


def decode_dead_letter(raw: bytes, max_bytes: int = 4 * DEFAULT_MAX_BYTES) -> DeadLetter | Rejected:
    return _decode(raw, max_bytes, _build_dead_letter)
