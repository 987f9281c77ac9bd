"""The wire module: every non-event payload round-trips, states are the contract's, and decoders
return Rejected (never raise) on bad input."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.operators.wire import (
    CAMERA_STATES,
    NODE_STATES,
    CameraState,
    CameraStatus,
    ConfigUpdate,
    DeadLetter,
    NodeStatus,
    Rejected,
    dead_letter,
    decode_camera_status,
    decode_config,
    decode_dead_letter,
    decode_node_status,
    encode_camera_status,
    encode_config,
    encode_dead_letter,
    encode_node_status,
)
from pipeline.settings import REPO_ROOT

pytestmark = pytest.mark.unit

METRICS = {"frames_read": 40, "detector_ms_p50": 61.5, "model_error": None, "config_rev": 0}
STATUS = CameraStatus("site-a", "cam-1", "online", "", "centernet@int8", METRICS, ts=17)


@pytest.mark.parametrize("state", sorted(CAMERA_STATES))
def test_camera_status_round_trips_in_every_state(state: CameraState) -> None:
    s = CameraStatus(STATUS.site, STATUS.cam, state, "why", STATUS.model, STATUS.metrics, STATUS.ts)
    assert decode_camera_status(encode_camera_status(s)) == s


def test_camera_states_are_the_contracts_including_starting() -> None:
    assert set(get_args(CameraState)) == {"starting", "online", "reconnecting", "failed", "offline"}
    assert "starting|online|reconnecting|failed|offline" in (REPO_ROOT / "docs" / "CONTRACTS.md").read_text()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"state": "ended"}, "bad_field"),  # a capture state, not a wire state
        ({"cam": "a/b"}, "bad_field"),
        ({"metrics": {"x": [1]}}, "bad_field"),
        ({"extra": 1}, "unknown_field"),
        ({"v": 2}, "unknown_version"),
    ],
)
def test_camera_status_refuses_what_the_contract_does_not_list(change: dict[str, Any], reason: str) -> None:
    obj = {**json.loads(encode_camera_status(STATUS)), **change}
    out = decode_camera_status(json.dumps(obj).encode())
    assert isinstance(out, Rejected) and out.reason == reason


def test_node_status_round_trips_and_states_are_closed() -> None:
    for state in sorted(NODE_STATES):
        n = NodeStatus("site-a", "node-1", state, 5)
        assert decode_node_status(encode_node_status(n)) == n
    bad = json.dumps({"v": 1, "site": "s", "node": "n", "state": "sleeping", "ts": 1}).encode()
    assert isinstance(decode_node_status(bad), Rejected)


def test_config_round_trips_and_keeps_its_fields_verbatim() -> None:
    c = ConfigUpdate("site-a", "cam-1", 5, {"min_score": 0.4, "labels": ["person"], "model": None})
    raw = encode_config(c)
    assert (
        raw
        == b'{"v":1,"site":"site-a","cam":"cam-1","rev":5,"config":{"min_score":0.4,"labels":["person"],"model":null}}'
    )
    assert decode_config(raw) == c


@pytest.mark.parametrize(
    "obj",
    [
        {"v": 1, "site": "s", "cam": "c", "rev": -1, "config": {}},
        {"v": 1, "site": "s", "cam": "c", "rev": 1, "config": {}, "extra": True},
        {"v": 1, "site": "s", "cam": "c", "config": {}},
    ],
)
def test_config_envelope_is_checked(obj: dict[str, Any]) -> None:
    assert isinstance(decode_config(json.dumps(obj).encode()), Rejected)


@pytest.mark.parametrize(("size", "cap"), [(0, 10), (10, 10), (1000, 300)])
def test_dead_letter_round_trips_with_its_cap(size: int, cap: int) -> None:
    raw = bytes(i % 256 for i in range(size))
    d = dead_letter(reason="too_large", detail="x" * 900, source="mqtt", topic="p/s/c/events", payload=raw,
                    now_ms=9, cap=cap)  # fmt: skip
    back = decode_dead_letter(encode_dead_letter(d))
    assert isinstance(back, DeadLetter) and back == d
    assert back.payload == raw[:cap] and back.size == size and back.truncated == (size > cap)
    assert len(back.detail) == 500


def test_a_dead_letter_that_lies_about_its_size_is_refused() -> None:
    obj = json.loads(encode_dead_letter(dead_letter(reason="r", detail="", source="kafka", topic="t",
                                                    payload=b"abcd", now_ms=1, cap=2)))  # fmt: skip
    assert obj["truncated"] is True
    obj["truncated"] = False
    assert isinstance(decode_dead_letter(json.dumps(obj).encode()), Rejected)


@given(st.binary(max_size=300))
def test_decoders_never_raise_on_random_bytes(raw: bytes) -> None:
    for decode in (decode_camera_status, decode_node_status, decode_config, decode_dead_letter):
        decode(raw)  # returns a value or Rejected; an exception fails the test


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from(["site", "cam", "state", "reason", "model", "metrics", "ts"]), json_values))
def test_status_decoder_never_raises_on_status_shaped_json(d: dict[str, Any]) -> None:
    obj = {**json.loads(encode_camera_status(STATUS)), **d}
    out = decode_camera_status(json.dumps(obj).encode())
    assert isinstance(out, CameraStatus | Rejected)
