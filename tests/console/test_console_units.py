"""Console pieces without a browser: passwords, users, the rule form, live rules."""

from __future__ import annotations

import json
from typing import Literal

import pytest

from pipeline.cloud_stage.live_rules import LiveRules
from pipeline.console.auth import check_password, csrf_ok, hash_password, load_users, parse_users
from pipeline.console.rules_form import RuleForm, mask_config, rules_config
from pipeline.errors import ConfigError
from pipeline.metrics import Registry
from pipeline.operators.wire import NodeStatus, encode_node_status
from pipeline.settings import Settings

pytestmark = pytest.mark.unit


def test_password_hash_round_trip_and_salted() -> None:
    h1, h2 = hash_password("s3cret"), hash_password("s3cret")
    assert h1 != h2 and h1.startswith("scrypt$")
    assert check_password("s3cret", h1) and check_password("s3cret", h2)
    assert not check_password("S3cret", h1)
    assert not check_password("s3cret", "plain-text")


def test_users_parse_and_refuse_bad_entries() -> None:
    h = hash_password("pw")
    users = parse_users(f"ada:admin:{h};vic:viewer:{h}", "env")
    assert users["ada"].can_edit and not users["vic"].can_edit
    with pytest.raises(ConfigError, match="role"):
        parse_users(f"eve:root:{h}", "env")
    with pytest.raises(ConfigError, match="name:role"):
        parse_users("eve:admin:plaintext", "env")
    with pytest.raises(ConfigError, match="no anonymous access"):
        load_users(None, None)
    # a hash cut short (a YAML quote, a shell's $-expansion) is refused when users load, not at login
    with pytest.raises(ConfigError, match="'ada': password hash not scrypt"):
        parse_users(f"ada:admin:{h.rsplit('$', 1)[0]}", "env")
    with pytest.raises(ConfigError, match="not base64"):
        parse_users(f"ada:admin:{h[:-4]}!!!!", "env")
    with pytest.raises(ConfigError, match="32 MiB"):  # would fail every check: scrypt's memory cap
        parse_users("ada:admin:" + h.replace(f"scrypt${2**14}$", f"scrypt${2**20}$"), "env")
    commented = parse_users(f"# viewers; admins\nada:admin:{h}\n  # vic:viewer:broken;x\nvic:viewer:{h}", "file")
    assert sorted(commented) == ["ada", "vic"]
    with pytest.raises(ConfigError, match="listed twice"):
        parse_users(f"ada:admin:{h};ada:viewer:{h}", "env")


def test_csrf_token_compare() -> None:
    assert csrf_ok("abc", "abc")
    assert not csrf_ok("abc", "abd") and not csrf_ok(None, "abc") and not csrf_ok("abc", "")


def test_rule_form_validates_and_replaces_by_name() -> None:
    form = {"kind": "line", "name": "door", "points": "[[0.5, 0.1], [0.5, 0.9]]", "direction": "left_to_right"}
    parsed = RuleForm.parse(form, "cam-1")
    assert isinstance(parsed, RuleForm)
    config = rules_config({"rules": [{"id": "door", "kind": "zone"}, {"id": "other"}]}, parsed)
    assert isinstance(config, dict)
    assert [r["id"] for r in config["rules"]] == ["other", "door"]
    assert config["rules"][1]["line"] == [[0.5, 0.1], [0.5, 0.9]] and config["rules"][1]["cameras"] == ["cam-1"]
    assert RuleForm.parse({**form, "points": "[[0.5, 0.1]]"}, "cam-1") == [
        "a line needs 2 points, got 1: click its start, then its end"
    ]
    outside = RuleForm.parse({**form, "points": "[[0.5, 0.1], [1.5, 0.9]]"}, "cam-1")
    assert isinstance(outside, RuleForm)
    errors = rules_config({}, outside)
    assert isinstance(errors, list) and errors
    bowtie = RuleForm.parse({"kind": "zone", "name": "z", "points": "[[0,0],[1,1],[1,0],[0,1]]"}, "cam-1")
    assert isinstance(bowtie, RuleForm) and isinstance(rules_config({}, bowtie), list)


def test_every_saved_config_carries_both_rules_and_masks() -> None:
    """MQTT retains a camera's last config record only: a restarted console knows no more, so a
    mask save must not leave the rules out (the next rule save would drop them) and vice versa."""
    mask = RuleForm.parse({"kind": "mask", "points": "[[0.9, 0.9], [1, 0.9], [1, 1]]"}, "cam-1")
    line = RuleForm.parse({"kind": "line", "name": "door", "points": "[[0.5, 0.1], [0.5, 0.9]]"}, "cam-1")
    assert isinstance(mask, RuleForm) and isinstance(line, RuleForm)
    current = {"rules": [{"id": "gate", "kind": "presence"}], "masks": [[[0, 0], [0.1, 0], [0, 0.1]]], "min_score": 0.4}
    with_mask = mask_config(current, mask)
    assert with_mask["rules"] == current["rules"] and len(with_mask["masks"]) == 2 and "min_score" not in with_mask
    with_line = rules_config(current, line)
    assert isinstance(with_line, dict)
    assert [r["id"] for r in with_line["rules"]] == ["gate", "door"] and with_line["masks"] == current["masks"]
    assert mask_config({}, mask) == {"masks": [[[0.9, 0.9], [1.0, 0.9], [1.0, 1.0]]]}


def test_live_rules_take_newest_revision_and_keep_old_on_error() -> None:
    live = LiveRules(Settings(), Registry())

    def record(rev: int, rules: object) -> bytes:
        return json.dumps({"v": 1, "site": "s", "cam": "cam-1", "rev": rev, "config": {"rules": rules}}).encode()

    live.offer(record(5, [{"id": "door", "kind": "line", "line": [[0.5, 0], [0.5, 1]]}]))
    assert [(s.id, s.cameras) for s in live.for_camera("s/cam-1")] == [("door", ("s/cam-1",))]
    live.offer(record(4, []))  # stale: ignored
    live.offer(record(6, [{"id": "bad", "kind": "line"}]))  # a line rule without a line: refused
    assert [s.id for s in live.for_camera("s/cam-1")] == ["door"]
    live.offer(b"{not json")  # malformed and envelope-less records: refused by the wire decoder, counted
    live.offer(json.dumps({"cam": "cam-1", "rev": 9, "config": {"rules": []}}).encode())
    assert [s.id for s in live.for_camera("s/cam-1")] == ["door"]
    assert live.metrics.counter("cloud_live_rules_rejected_total") == 3
    live.offer(record(7, []))
    assert live.for_camera("s/cam-1") == [] and live.for_camera("s/cam-2") == []


def test_config_set_carries_camera_rules() -> None:
    from pipeline.cloud_stage.command import parse_pairs

    config = parse_pairs(['rules=[{"id": "door", "kind": "line", "line": [[0.5, 0], [0.5, 1]]}]'])
    assert config["rules"][0]["id"] == "door" and config["rules"][0]["line"] == [[0.5, 0.0], [0.5, 1.0]]
    with pytest.raises(ConfigError):
        parse_pairs(['rules=[{"id": "door", "kind": "teleport"}]'])


def test_fleet_marks_stale_cameras_and_dead_nodes_offline() -> None:
    import time

    from pipeline.console.feed import ConsoleFeed

    settings = Settings(mqtt={"topic_prefix": "p"}, console={"offline_after_s": 25})
    feed = ConsoleFeed(settings, Registry(), "unit-feed")  # never connected: messages are fed by hand

    def node(state: Literal["online", "offline"]) -> bytes:
        return encode_node_status(NodeStatus("s", "n1", state, now))

    now = int(time.time() * 1000)

    def status(cam: str, node: str, ts: int, frames: int) -> bytes:
        metrics = {"frames_read": frames, "outbox_depth": 2}
        body = {"v": 1, "site": "s", "cam": cam, "node": node, "state": "online", "model": "m", "metrics": metrics}
        return json.dumps({**body, "reason": "", "ts": ts}).encode()

    feed._handle("p/s/nodes/n1/status", node("online"))
    feed._handle("p/s/cam-a/status", status("cam-a", "n1", now - 10_000, 100))
    feed._handle("p/s/cam-a/status", status("cam-a", "n1", now, 300))
    feed._handle("p/s/cam-b/status", status("cam-b", "n2", now - 60_000, 5), retained=True)  # a node long gone
    rows = {r["cam"]: r for r in feed.fleet()["s"]["cameras"]}
    assert rows["cam-a"]["online"] and rows["cam-a"]["fps"] == 20.0 and rows["cam-a"]["outbox_depth"] == 2
    assert not rows["cam-b"]["online"] and rows["cam-b"]["state"] == "offline (stale)"
    feed._handle("p/s/nodes/n1/status", b'{"state": "offline"}')  # not the wire format: refused, counted
    feed._handle("p/s/cam-a/status", b"online")
    assert feed.metrics.counter("console_messages_rejected_total") == 2
    assert {r["cam"]: r for r in feed.fleet()["s"]["cameras"]}["cam-a"]["online"]
    feed._handle("p/s/nodes/n1/status", node("offline"))  # its Last Will
    rows = {r["cam"]: r for r in feed.fleet()["s"]["cameras"]}
    assert rows["cam-a"]["state"] == "offline (node down)" and not rows["cam-a"]["online"]
