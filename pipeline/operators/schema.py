"""Wire schemas shared by edge, bridge and cloud, and their JSON codecs.

Encoding: compact JSON (UTF-8, no spaces), one object per MQTT message / Kafka record, with a
schema version ``v``. Decoders never raise on bad input: they return :class:`Rejected` with a
short ``reason`` code (used as the dead-letter reason and metric label) and a human detail.
Sizes are checked before parsing. Unknown fields are rejected, so a producer that speaks a
newer dialect is noticed instead of being half-understood.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, TypeVar, cast

from pipeline.errors import PayloadTooLarge, SchemaError, UnknownSchemaVersion

SCHEMA_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({1})
DEFAULT_MAX_BYTES: Final = 64 * 1024

EventType = Literal["track_started", "track_updated", "track_ended"]
EVENT_TYPES: Final = frozenset({"track_started", "track_updated", "track_ended"})
Verification = Literal["verified", "contradicted", "unverified", "not_escalated"]
VERIFICATIONS: Final = frozenset({"verified", "contradicted", "unverified", "not_escalated"})

_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,96}$")
Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a payload was refused. ``reason`` is a stable code, ``detail`` is for people."""

    reason: str
    detail: str = ""

    def to_error(self) -> SchemaError:
        if self.reason == "unknown_version":
            return UnknownSchemaVersion(self.reason, self.detail)
        if self.reason == "too_large":
            return PayloadTooLarge(self.reason, self.detail)
        return SchemaError(self.reason, self.detail)


@dataclass(frozen=True, slots=True)
class Event:
    """One track event from a camera node. ``id`` is the idempotency key downstream."""

    id: str
    site: str
    cam: str
    ts: int  # capture time, epoch milliseconds
    seq: int  # per-camera sequence number (outbox order, acknowledged by the bridge)
    type: EventType
    track: int
    label: str
    score: float
    box: Box  # x1, y1, x2, y2, normalised to [0, 1]
    det: str  # detector name@version
    crop: str | None = None  # base64 JPEG, only on some track_started events
    attrs: Mapping[str, str | float | int | bool] = field(default_factory=dict)
    v: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Alert:
    """One incident. ``id`` is derived from its cause, so reprocessing re-emits the same id."""

    id: str
    ts: int  # when the alert was made, epoch ms
    site: str
    cam: str
    rule: str
    event_id: str  # the event that fired it
    event_ts: int  # that event's capture time (latency = arrival - event_ts)
    track: int
    label: str
    box: Box
    edge_score: float
    cloud_score: float | None
    fused_score: float
    verification: Verification
    model: str | None = None  # heavy model name@version when it was consulted
    detail: str = ""
    v: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Acks:
    """Bridge -> edge: seq ranges (inclusive) of one camera that Kafka has acknowledged."""

    cam: str
    ranges: tuple[tuple[int, int], ...]
    v: int = SCHEMA_VERSION


# --------------------------------------------------------------------------- helpers


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every message: json.loads with a keyword argument builds a new JSONDecoder per
# call, ~4 % of the bridge's CPU per event (profiled).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _load_object(raw: bytes, max_bytes: int) -> dict[str, Any] | Rejected:
    if len(raw) > max_bytes:
        return Rejected("too_large", f"{len(raw)} bytes > cap {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected("not_utf8", str(exc))
    try:
        obj = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        return Rejected("not_json", str(exc)[:200])
    if not isinstance(obj, dict):
        return Rejected("not_object", f"top level is {type(obj).__name__}")
    v = obj.get("v")
    if type(v) is not int:
        return Rejected("unknown_version", f"missing or non-integer version {v!r}")
    if v not in SUPPORTED_VERSIONS:
        return Rejected("unknown_version", f"schema version {v} not in {sorted(SUPPORTED_VERSIONS)}")
    return obj


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail


def _check_keys(obj: Mapping[str, Any], required: frozenset[str], optional: frozenset[str]) -> None:
    missing = required - obj.keys()
    if missing:
        raise _Bad("missing_field", ", ".join(sorted(missing)))
    extra = obj.keys() - required - optional
    if extra:
        raise _Bad("unknown_field", ", ".join(sorted(str(k) for k in extra))[:200])


def _str(obj: Mapping[str, Any], key: str, *, ident: bool = True, max_len: int = 96) -> str:
    v = obj[key]
    if not isinstance(v, str) or not v or len(v) > max_len or (ident and not _ID_RE.match(v)):
        raise _Bad("bad_field", f"{key}={v!r:.60}")
    return v


def _int(obj: Mapping[str, Any], key: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    v = obj[key]
    if type(v) is not int or not lo <= v <= hi:
        raise _Bad("bad_field", f"{key}={v!r:.60}")
    return v


def _num(v: Any, key: str, lo: float = 0.0, hi: float = 1.0) -> float:
    # Range first: math.isfinite raises OverflowError on an int beyond float range (a 309-digit
    # number is valid JSON), and the comparison is exact for ints of any size (found by boofuzz).
    if type(v) not in (int, float) or not lo <= v <= hi or not math.isfinite(v):
        raise _Bad("bad_field", f"{key}={v!r:.60}")
    return float(v)


def _box(v: Any) -> Box:
    if not isinstance(v, list) or len(v) != 4:
        raise _Bad("bad_field", f"box={v!r:.60}")
    x1, y1, x2, y2 = (_num(c, "box") for c in v)
    if x2 < x1 or y2 < y1:
        raise _Bad("bad_field", f"box corners out of order {v!r:.60}")
    return (x1, y1, x2, y2)


T = TypeVar("T")


def _decode(raw: bytes, max_bytes: int, build: Callable[[dict[str, Any]], T]) -> T | Rejected:
    obj = _load_object(raw, max_bytes)
    if isinstance(obj, Rejected):
        return obj
    try:
        return build(obj)
    except _Bad as bad:
        return Rejected(bad.reason, bad.detail)


# --------------------------------------------------------------------------- events

_EVENT_REQUIRED: Final = frozenset(
    {"v", "id", "site", "cam", "ts", "seq", "type", "track", "label", "score", "box", "det"}
)
_EVENT_OPTIONAL: Final = frozenset({"crop", "attrs"})
MAX_TS_MS: Final = 253402300799999  # 9999-12-31


def encode_event(e: Event) -> bytes:
    d: dict[str, Any] = {
        "v": e.v,
        "id": e.id,
        "site": e.site,
        "cam": e.cam,
        "ts": e.ts,
        "seq": e.seq,
        "type": e.type,
        "track": e.track,
        "label": e.label,
        "score": round(e.score, 4),
        "box": [round(c, 4) for c in e.box],
        "det": e.det,
    }
    if e.crop is not None:
        d["crop"] = e.crop
    if e.attrs:
        d["attrs"] = dict(e.attrs)
    return _dumps(d)


def _build_event(o: dict[str, Any]) -> Event:
    _check_keys(o, _EVENT_REQUIRED, _EVENT_OPTIONAL)
    etype = o["type"]
    if not isinstance(etype, str) or etype not in EVENT_TYPES:
        raise _Bad("bad_field", f"type={etype!r:.60}")
    crop = o.get("crop")
    if crop is not None and not isinstance(crop, str):
        raise _Bad("bad_field", "crop must be a base64 string")
    attrs = o.get("attrs", {})
    if not isinstance(attrs, dict) or len(attrs) > 16:
        raise _Bad("bad_field", "attrs must be an object of at most 16 entries")
    for k, val in attrs.items():
        if not isinstance(k, str) or len(k) > 32:
            raise _Bad("bad_field", f"attrs key {k!r:.40}")
        if not isinstance(val, str | int | float | bool) or (isinstance(val, str) and len(val) > 64):
            raise _Bad("bad_field", f"attrs[{k}]")
        if isinstance(val, float) and not math.isfinite(val):
            raise _Bad("bad_field", f"attrs[{k}] not finite")
    return Event(
        v=o["v"],
        id=_str(o, "id"),
        site=_str(o, "site"),
        cam=_str(o, "cam"),
        ts=_int(o, "ts", 0, MAX_TS_MS),
        seq=_int(o, "seq"),
        type=cast(EventType, etype),  # checked against EVENT_TYPES above
        track=_int(o, "track"),
        label=_str(o, "label", max_len=48),
        score=_num(o["score"], "score"),
        box=_box(o["box"]),
        det=_str(o, "det", ident=False, max_len=96),
        crop=crop,
        attrs=attrs,
    )


def decode_event(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Event | Rejected:
    return _decode(raw, max_bytes, _build_event)


# --------------------------------------------------------------------------- alerts

_ALERT_REQUIRED: Final = frozenset(
    {
        "v", "id", "ts", "site", "cam", "rule", "event_id", "event_ts", "track", "label", "box",
        "edge_score", "cloud_score", "fused_score", "verification",
    }
)  # fmt: skip
_ALERT_OPTIONAL: Final = frozenset({"model", "detail"})


def encode_alert(a: Alert) -> bytes:
    d = asdict(a)
    d["box"] = [round(c, 4) for c in a.box]
    return _dumps(d)


def _build_alert(o: dict[str, Any]) -> Alert:
    _check_keys(o, _ALERT_REQUIRED, _ALERT_OPTIONAL)
    verification = o["verification"]
    if not isinstance(verification, str) or verification not in VERIFICATIONS:
        raise _Bad("bad_field", f"verification={verification!r:.40}")
    cloud = o["cloud_score"]
    model = o.get("model")
    if model is not None and not isinstance(model, str):
        raise _Bad("bad_field", "model")
    detail = o.get("detail", "")
    if not isinstance(detail, str):
        raise _Bad("bad_field", "detail")
    return Alert(
        v=o["v"],
        id=_str(o, "id"),
        ts=_int(o, "ts", 0, MAX_TS_MS),
        site=_str(o, "site"),
        cam=_str(o, "cam"),
        rule=_str(o, "rule"),
        event_id=_str(o, "event_id"),
        event_ts=_int(o, "event_ts", 0, MAX_TS_MS),
        track=_int(o, "track"),
        label=_str(o, "label", max_len=48),
        box=_box(o["box"]),
        edge_score=_num(o["edge_score"], "edge_score"),
        cloud_score=None if cloud is None else _num(cloud, "cloud_score"),
        fused_score=_num(o["fused_score"], "fused_score"),
        verification=cast(Verification, verification),  # checked against VERIFICATIONS above
        model=model,
        detail=detail,
    )


def decode_alert(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Alert | Rejected:
    return _decode(raw, max_bytes, _build_alert)


# --------------------------------------------------------------------------- acks


def encode_acks(a: Acks) -> bytes:
    return _dumps({"v": a.v, "cam": a.cam, "ranges": [list(r) for r in a.ranges]})


def _build_acks(o: dict[str, Any]) -> Acks:
    _check_keys(o, frozenset({"v", "cam", "ranges"}), frozenset())
    ranges = o["ranges"]
    if not isinstance(ranges, list) or len(ranges) > 10_000:
        raise _Bad("bad_field", "ranges")
    out: list[tuple[int, int]] = []
    for r in ranges:
        if not isinstance(r, list) or len(r) != 2 or any(type(x) is not int or x < 0 for x in r) or r[0] > r[1]:
            raise _Bad("bad_field", f"range {r!r:.40}")
        out.append((r[0], r[1]))
    return Acks(v=o["v"], cam=_str(o, "cam"), ranges=tuple(out))


def decode_acks(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Acks | Rejected:
    return _decode(raw, max_bytes, _build_acks)


# --------------------------------------------------------------------------- generic


def decode_json_object(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any] | Rejected:
    """Size, UTF-8, JSON-object and version checks only (for messages validated elsewhere,
    e.g. camera config, which the edge checks against its settings model)."""
    return _load_object(raw, max_bytes)
