"""Pure parts of the bridge: ack ranges, uplink validation, dead-letter records, config check."""

from __future__ import annotations

import base64
import json

import pytest

from pipeline.bridge.ack_ranges import AckCollector, merge_ranges
from pipeline.bridge.validation import validate_uplink
from pipeline.operators.schema import Event, Rejected, encode_event
from pipeline.operators.wire import dead_letter, decode_config, encode_dead_letter
from pipeline.topics import Topics
from tests.bridge.bridge_helpers import make_event

pytestmark = pytest.mark.unit

TOPICS = Topics("vision")
NOW = 1_800_000_000_000


def test_merge_ranges() -> None:
    assert merge_ranges([]) == ()
    assert merge_ranges([5, 1, 2, 3, 7, 6, 2]) == ((1, 3), (5, 7))
    assert merge_ranges([0]) == ((0, 0),)


def test_ack_collector_takes_per_camera_and_resets() -> None:
    acks = AckCollector()
    for s in (3, 1, 2):
        acks.add("s", "c1", s)
    acks.add("s", "c2", 9)
    assert acks.take() == {("s", "c1"): ((1, 3),), ("s", "c2"): ((9, 9),)}
    assert acks.take() == {}


def _validate(topic: str, raw: bytes) -> Event | Rejected:
    return validate_uplink(topic, raw, topics=TOPICS, max_bytes=4096, max_future_skew_s=60, now_ms=NOW)


def _rejected(topic: str, raw: bytes) -> Rejected:
    result = _validate(topic, raw)
    assert isinstance(result, Rejected), result
    return result


@pytest.mark.parametrize(
    ("topic", "event", "reason"),
    [
        ("vision/site-a/cam-1/events", make_event("cam-1", 1, ts=NOW), None),
        ("vision/site-a/cam-1/events", make_event("cam-1", 1, ts=NOW + 59_000), None),
        ("vision/site-a/cam-1/events", make_event("cam-1", 1, ts=NOW + 61_000), "future_ts"),
        ("vision/site-a/cam-2/events", make_event("cam-1", 1, ts=NOW), "camera_mismatch"),
        ("vision/site-b/cam-1/events", make_event("cam-1", 1, ts=NOW), "camera_mismatch"),
        ("vision/site-a/cam-1/status", make_event("cam-1", 1, ts=NOW), "bad_topic"),
        ("other/site-a/cam-1/events", make_event("cam-1", 1, ts=NOW), "bad_topic"),
    ],
)
def test_validate_uplink(topic: str, event: Event, reason: str | None) -> None:
    result = _validate(topic, encode_event(event))
    if reason is None:
        assert result == event
    else:
        assert isinstance(result, Rejected) and result.reason == reason


def test_validate_uplink_passes_schema_reasons_through() -> None:
    topic = "vision/site-a/cam-1/events"
    assert _rejected(topic, b"nope").reason == "not_json"
    assert _rejected(topic, b"x" * 5000).reason == "too_large"
    assert _rejected(topic, b'{"v":2}').reason == "unknown_version"


def test_dead_letter_value_caps_payload_and_keeps_size() -> None:
    raw = bytes(range(256)) * 4
    value = json.loads(
        encode_dead_letter(
            dead_letter(reason="too_large", detail="d", source="mqtt", topic="t", payload=raw, now_ms=NOW, cap=300)
        )
    )
    assert value["v"] == 1 and value["reason"] == "too_large" and value["source"] == "mqtt"
    assert value["topic"] == "t" and value["ts"] == NOW and value["size"] == 1024 and value["truncated"]
    assert base64.b64decode(value["payload_b64"]) == raw[:300]


@pytest.mark.parametrize(
    ("obj", "ok"),
    [
        ({"v": 1, "site": "s", "cam": "c", "rev": 1, "config": {}}, True),
        ({"v": 1, "site": "s/x", "cam": "c", "rev": 1, "config": {}}, False),
        ({"v": 1, "site": "s", "cam": "+", "rev": 1, "config": {}}, False),
        ({"v": 1, "site": "s", "cam": "c", "rev": "1", "config": {}}, False),
        ({"v": 1, "site": "s", "cam": "c", "rev": 1, "config": []}, False),
    ],
)
def test_check_config(obj: dict[str, object], ok: bool) -> None:
    assert isinstance(decode_config(json.dumps(obj).encode()), Rejected) is not ok
