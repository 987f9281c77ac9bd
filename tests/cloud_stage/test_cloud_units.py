"""Pure parts of the cloud stage: escalation, fusion/verdicts, circuit breaker, rules, ledger."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline.cloud_stage.alerting import IncidentLedger, incident_alert_id
from pipeline.cloud_stage.circuit_breaker import CircuitBreaker, State
from pipeline.cloud_stage.command import config_record, parse_pairs
from pipeline.cloud_stage.consume import SeenIndex, dead_letter_record, decode
from pipeline.cloud_stage.escalation import policy_for, should_escalate
from pipeline.cloud_stage.rules_engine import RulesEngine, StagedState
from pipeline.cloud_stage.verification import (
    centre_region,
    cloud_score,
    decode_crop,
    fuse,
    judge,
    letterbox,
)
from pipeline.errors import ConfigError
from pipeline.metrics import Registry
from pipeline.operators.schema import Event, Rejected
from pipeline.settings import CloudSettings, RuleSettings
from pipeline.settings.services import Escalation
from pipeline.testing import FakeClock

pytestmark = pytest.mark.unit
_seq = itertools.count()


def event(**kw: Any) -> Event:
    base: dict[str, Any] = dict(
        id=f"e{next(_seq)}", site="s", cam="cam-1", ts=1_000_000, seq=1, type="track_started",
        track=1, label="person", score=0.7, box=(0.4, 0.4, 0.5, 0.8), det="test", crop="AAAA",
    )  # fmt: skip
    base.update(kw)
    return Event(**base)


# --------------------------------------------------------------------------- escalation


@pytest.mark.parametrize(
    ("policy", "kw", "expected"),
    [
        ("always", {"type": "track_updated"}, True),
        ("always", {"crop": None}, False),
        ("never", {}, False),
        ("track_started", {}, True),
        ("track_started", {"type": "track_updated"}, False),
        ("track_started", {"type": "track_updated", "attrs": {"view": "better"}}, True),
        ("track_started", {"type": "track_updated", "attrs": {"view": "better"}, "crop": None}, False),
        ("low_confidence", {"score": 0.5}, True),
        ("low_confidence", {"score": 0.9}, False),
    ],
)
def test_escalation_policy(policy: Escalation, kw: dict[str, object], expected: bool) -> None:
    assert should_escalate(event(**kw), policy, 0.6) is expected


def test_escalation_overrides_most_specific_wins() -> None:
    c = CloudSettings(
        escalation="track_started",
        escalation_overrides={"cam-1/person": "always", "cam-1/*": "never", "*/car": "low_confidence"},
    )
    assert policy_for(c, "cam-1", "person") == "always"
    assert policy_for(c, "cam-1", "car") == "never"
    assert policy_for(c, "cam-2", "car") == "low_confidence"
    assert policy_for(c, "cam-2", "person") == "track_started"


# --------------------------------------------------------------------------- verification


def test_fusion_and_verdicts() -> None:
    assert fuse(0.8, None, 0.4) == 0.8
    assert fuse(0.8, 0.5, 0.4) == pytest.approx(0.4 * 0.8 + 0.6 * 0.5)
    v = judge(0.8, 0.9, 0.4, 0.25, "centernet@1")
    assert (v.verification, v.model) == ("verified", "centernet@1")
    assert v.fused_score == pytest.approx(0.86)
    assert judge(0.8, 0.1, 0.4, 0.25, "m").verification == "contradicted"


def test_cloud_score_uses_label_and_centre_region() -> None:
    rgb = np.zeros((200, 100, 3), np.uint8)  # tall crop: letterboxed with side padding
    lb = letterbox(rgb)
    assert lb.image.shape == (512, 512, 3) and lb.image.dtype == np.float32
    assert lb.scale == pytest.approx(512 / 200) and lb.pad_x == pytest.approx(128)
    region = centre_region(lb, 0.5)
    assert region == pytest.approx((128 + 25 * 2.56, 50 * 2.56, 128 + 75 * 2.56, 150 * 2.56))
    dets = np.zeros((100, 6), np.float32)
    dets[0] = (0, 0, 100, 100, 0.95, 0)  # person in a corner (padding): ignored
    dets[1] = (200, 200, 300, 300, 0.9, 2)  # a car in the centre: wrong label
    dets[2] = (220, 150, 290, 400, 0.7, 0)  # the person in the centre
    assert cloud_score(dets, "person", region) == pytest.approx(0.7)
    assert cloud_score(dets, "car", region) == pytest.approx(0.9)
    assert cloud_score(dets, "dog", region) == 0.0


def test_decode_crop_roundtrip_and_garbage() -> None:
    _, jpg = cv2.imencode(".jpg", np.full((40, 20, 3), (0, 0, 255), np.uint8))  # BGR red
    rgb = decode_crop(base64.b64encode(jpg.tobytes()).decode())
    assert rgb is not None and rgb.shape == (40, 20, 3) and rgb[..., 0].mean() > 200  # red first: RGB
    assert decode_crop("not base64!") is None
    assert decode_crop(base64.b64encode(b"not a jpeg").decode()) is None


# --------------------------------------------------------------------------- circuit breaker


def _state(b: CircuitBreaker) -> State:
    """``b.state`` read afresh (mypy would keep it narrowed across the calls that change it)."""
    return b.state


def test_circuit_breaker_state_machine() -> None:
    clock = FakeClock(100.0)
    b = CircuitBreaker(failures=3, reset_s=5.0, clock=clock)
    assert _state(b) == "closed" and b.allow()
    b.record_failure()
    b.record_failure()
    b.record_success()  # success resets the count
    b.record_failure()
    b.record_failure()
    assert _state(b) == "closed"
    b.record_failure()
    assert _state(b) == "open" and b.opened_count == 1
    assert not b.allow() and b.rejected_count == 1
    clock.advance(4.9)
    assert not b.allow()
    clock.advance(0.2)
    assert _state(b) == "half_open"
    assert b.allow()  # the one trial call
    assert not b.allow()  # others wait for its outcome
    b.record_failure()  # trial failed: open again, for a fresh reset period
    assert _state(b) == "open" and b.opened_count == 2
    clock.advance(5.0)
    assert b.allow()
    b.record_success()
    assert _state(b) == "closed" and b.allow() and b.allow()


# --------------------------------------------------------------------------- rules and ledger


def _run_rules(
    rules: list[RuleSettings], evs: list[Event], fused: float | None = None, ledger_table: dict[str, Any] | None = None
) -> list[str]:
    engine = RulesEngine(rules)
    state_table: dict[str, Any] = {}
    ledger_table = {} if ledger_table is None else ledger_table
    ledger = IncidentLedger(ledger_table)
    alerts = []
    for ev in evs:
        st = StagedState(state_table)
        for f in engine.apply(ev, ev.score if fused is None else fused, st):
            opened, key, entry = ledger.decide(f, ev)
            if opened is not None:
                alerts.append(incident_alert_id(f.rule.id, ev.site, ev.cam, f.incident_key, opened))
            ledger.commit(key, entry)
        st.commit()
        for cam, person in engine.expired:
            ledger.forget(engine.specs, cam, person)
    return alerts


def test_presence_rule_and_ledger_one_alert_per_track() -> None:
    rule = RuleSettings(id="p", kind="presence", labels=["person"], min_score=0.5, cooldown_s=60)
    evs = [
        event(track=1, ts=1000),
        event(track=1, ts=2000, type="track_updated"),
        event(track=2, ts=2500, score=0.3),  # below min_score
        event(track=2, ts=3000, score=0.8, type="track_updated"),
        event(track=1, ts=4000, type="track_ended"),
        event(track=3, ts=5000, label="car"),
    ]
    ledger: dict[str, Any] = {}
    assert _run_rules([rule], evs, ledger_table=ledger) == [
        incident_alert_id("p", "s", "cam-1", "p|s/cam-1|1", 1000),
        incident_alert_id("p", "s", "cam-1", "p|s/cam-1|2", 3000),
    ]
    assert "p|s/cam-1|1" not in ledger and "p|s/cam-1|2" in ledger  # ended tracks leave the ledger
    # deterministic: the same events give the same ids
    assert _run_rules([rule], evs) == _run_rules([rule], evs)


def test_count_and_line_rules_with_cooldown() -> None:
    count = RuleSettings(id="c", kind="count", count=2, window_s=10, cooldown_s=0)
    line = RuleSettings(id="l", kind="line", line=((0.5, 0.0), (0.5, 1.0)), direction="any", cooldown_s=60)
    steps = [(1, 0.2), (2, 0.3), (1, 0.7), (3, 0.3), (1, 0.2)]  # track 1 crosses twice
    evs = [
        event(track=t, ts=1000 * i, box=(x, 0.4, x + 0.05, 0.6), type="track_updated") for i, (t, x) in enumerate(steps)
    ]
    alerts = _run_rules([count, line], evs, fused=0.9)
    assert alerts == [
        incident_alert_id("l", "s", "cam-1", "l|s/cam-1|1", 2000),  # 2nd crossing within cooldown: none
        incident_alert_id("c", "s", "cam-1", "c|s/cam-1|zone", 3000),
    ]


def test_schedule_gates_hits() -> None:
    night = RuleSettings(id="n", kind="presence", schedule=("22:00", "06:00"))
    noon, one_am = 12 * 3600_000, 3600_000
    assert _run_rules([night], [event(ts=noon, score=0.9)]) == []
    assert len(_run_rules([night], [event(ts=one_am, score=0.9)])) == 1


# --------------------------------------------------------------------------- config set


def test_config_set_validates_keys_and_values() -> None:
    assert parse_pairs(["min_score=0.4", "labels=person,car", "crops=false"]) == {
        "min_score": 0.4, "labels": ["person", "car"], "crops": False,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="unknown camera setting"):
        parse_pairs(["nope=1"])
    with pytest.raises(ConfigError, match="invalid"):
        parse_pairs(["min_score=7"])
    rec = config_record("site-a", "cam-1", {"min_score": 0.4}, rev=5)
    assert rec == b'{"v":1,"site":"site-a","cam":"cam-1","rev":5,"config":{"min_score":0.4}}'


# --------------------------------------------------------------------------- consume


def test_seen_index_is_windowed_and_bounded() -> None:
    table: dict[str, int] = {}
    seen = SeenIndex(table, window_s=10, max_per_camera=5, metrics=Registry())
    evs = [event(id=f"x{i}") for i in range(8)]
    for i, ev in enumerate(evs):
        assert not seen.seen(ev)
        seen.add(ev, now_ms=1000 * i)
        assert seen.seen(ev)
    assert len(table) == 5 and not seen.seen(evs[0]) and seen.seen(evs[7])  # size bound
    seen.add(event(id="late"), now_ms=15_500)  # ids older than 10 s forgotten
    assert set(table) == {"s/cam-1|x6", "s/cam-1|x7", "s/cam-1|late"}
    fresh = SeenIndex(table, window_s=10, max_per_camera=5, metrics=Registry())  # after a restart
    fresh.add(event(id="later"), now_ms=17_500)
    assert set(table) == {"s/cam-1|late", "s/cam-1|later"}


def test_poison_records_become_dead_letters() -> None:
    rejected = decode(b"\xff\xfe")
    assert isinstance(rejected, Rejected) and rejected.reason == "not_utf8"
    rec = json.loads(dead_letter_record(rejected, "t.events", b"\xff\xfe", now_ms=5))
    assert rec == {"v": 1, "reason": "not_utf8", "detail": rejected.detail, "source": "kafka",
                   "topic": "t.events", "ts": 5, "payload_b64": "//4=", "size": 2, "truncated": False}  # fmt: skip


def test_track_state_without_track_ended_expires_after_the_ttl() -> None:
    from pipeline.cloud_stage.track_expiry import TrackExpiry
    from pipeline.operators.rules import state_key

    rules = [RuleSettings(id="p", kind="presence", labels=["person"], min_score=0.5),
             RuleSettings(id="c", kind="count", count=5, window_s=10)]  # fmt: skip
    engine = RulesEngine(rules)
    state_table: dict[str, Any] = {}
    ledger_table: dict[str, Any] = {}
    tracks: dict[str, Any] = {}
    per_track = [s for s in engine.specs if s.kind != "count"]
    metrics = Registry()

    def expiry() -> TrackExpiry:
        return TrackExpiry(state_table, tracks, [state_table, ledger_table],
                           lambda cam, t: [state_key(s, cam, t) for s in per_track], 300, metrics)  # fmt: skip

    exp = expiry()
    ledger = IncidentLedger(ledger_table)

    def feed(ev: Event) -> list[int]:
        st = StagedState(state_table)
        for f in engine.apply(ev, ev.score, st):
            _, key, entry = ledger.decide(f, ev)
            ledger.commit(key, entry)
        st.commit()
        for cam, person in engine.expired:  # as the worker does when a person is forgotten
            ledger.forget(engine.specs, cam, person)
        if ev.type == "track_ended":
            tracks.pop(f"{ev.site}/{ev.cam}|{ev.track}", None)
        else:
            tracks[f"{ev.site}/{ev.cam}|{ev.track}"] = {"cloud": 0.9}
        return exp.touch(f"{ev.site}/{ev.cam}", ev.track, ev.ts, ended=ev.type == "track_ended")

    # track 1 is never ended (its edge crashed); track 2 ends properly; track 3 lives on
    assert feed(event(track=1, ts=1_000)) == []
    assert feed(event(track=2, ts=2_000)) == []
    assert feed(event(track=2, ts=3_000, type="track_ended")) == []
    assert "p|s/cam-1|1" in state_table and "p|s/cam-1|1" in ledger_table and "s/cam-1|1" in tracks
    assert feed(event(track=3, ts=200_000)) == []  # 199 s later: within the TTL
    assert feed(event(track=3, ts=301_500, type="track_updated")) == [1]  # 300.5 s after track 1's last event
    assert "p|s/cam-1|1" not in state_table and "p|s/cam-1|1" not in ledger_table and "s/cam-1|1" not in tracks
    assert "p|s/cam-1|3" in state_table and "s/cam-1|3" in tracks
    assert any(k.startswith("c|s/cam-1|") for k in state_table), "camera-wide count state is not per track"
    assert metrics.counter("cloud_track_state_expired_total") == 1
    # After a rebalance the index is rebuilt from the tables: track 3 expires by its stored time.
    exp = expiry()
    assert feed(event(track=4, ts=301_600)) == []
    assert feed(event(track=4, ts=700_000, type="track_updated")) == [3]
    assert "p|s/cam-1|3" not in state_table and "s/cam-1|3" not in tracks


def test_two_sites_with_the_same_camera_id_keep_apart() -> None:
    """Camera ids are unique within a site only: every node's first camera is cam-1 by default.
    Keyed by the id alone, site b's person 1 shared site a's presence state and raised no alert,
    and a rule drawn for site a's cam-1 fired on site b's."""
    from pipeline.cloud_stage.live_rules import LiveRules
    from pipeline.settings import Settings

    presence = RuleSettings(id="p", kind="presence", labels=["person"], min_score=0.5)
    evs = [event(site="a", track=1, ts=1000), event(site="b", track=1, ts=1500),
           event(site="a", track=1, ts=2000, type="track_updated")]  # fmt: skip
    assert _run_rules([presence], evs) == [
        incident_alert_id("p", "a", "cam-1", "p|a/cam-1|1", 1000),
        incident_alert_id("p", "b", "cam-1", "p|b/cam-1|1", 1500),
    ]
    seen = SeenIndex({}, window_s=10, max_per_camera=5, metrics=Registry())
    seen.add(event(site="a", id="e1"), now_ms=0)
    assert seen.seen(event(site="a", id="e1")) and not seen.seen(event(site="b", id="e1"))

    live = LiveRules(Settings(), Registry())
    line = {"id": "door", "kind": "line", "line": [[0.5, 0.0], [0.5, 1.0]]}
    live.offer(config_record("a", "cam-1", {"rules": [line]}, rev=1))
    assert [s.id for s in live.for_camera("a/cam-1")] == ["door"] and live.for_camera("b/cam-1") == []
    engine = RulesEngine([], live=live.for_camera)
    crossing = [event(site=site, track=1, ts=ts, box=(x, 0.4, x + 0.02, 0.6), type="track_updated")
                for site in ("a", "b") for ts, x in ((1000, 0.2), (2000, 0.7))]  # fmt: skip
    fired = []
    state: dict[str, Any] = {}
    for ev in crossing:
        st = StagedState(state)
        fired += [(ev.site, f.rule.id) for f in engine.apply(ev, 0.9, st)]
        st.commit()
    assert fired == [("a", "door")]
