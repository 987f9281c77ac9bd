"""The boofuzz MQTT campaign (pipeline/chaos/boofuzz_mqtt.py) against a password-protected
Mosquitto with the bridge attached: no crash, no hang, authenticated traffic still flows; the
watchdog does see a crash and a hang when we cause them; and the packet definitions are right.
``pipeline chaos --only fuzz`` runs 10,000 cases; the suite runs 800."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from boofuzz.mutation import Mutation
from boofuzz.mutation_context import MutationContext

from pipeline.chaos.boofuzz_packets import VARINT_MUTATIONS, MqttEndpoint, build_requests, fuzz_paths
from pipeline.chaos.fuzz_run import boofuzz_table, fuzz_mqtt_boofuzz, start_rig
from pipeline.chaos.mqtt_fuzz import connect, publish, subscribe
from pipeline.chaos.rig import ChaosEnv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CASES = 800
EP = MqttEndpoint("127.0.0.1", 1, "user", "secret", "pfx", "site", "cam-1", b'{"v":1,"id":"e1","score":0.9}')


def test_boofuzz_campaign_leaves_broker_and_bridge_working(chaos_env: ChaosEnv) -> None:
    outcome = fuzz_mqtt_boofuzz(chaos_env, CASES)
    print("\n" + boofuzz_table(outcome))
    r = outcome.report
    assert r.cases == CASES, "boofuzz's sessions ran every case asked for"
    assert sum(r.cases_by_request.values()) == r.cases and len(r.cases_by_request) == len(fuzz_paths())
    assert not r.crashes and not r.hangs and not r.errors and r.aborted is None
    assert r.probes >= CASES // 100
    # Mutated packets got past framing: the broker accepted some and answered them.
    assert r.answers.get("CONNACK", 0) and r.answers.get("PUBACK", 0) and r.answers.get("SUBACK", 0)
    assert outcome.dead_letters, "mutated payloads reached the bridge's validation (dead-letter topic)"
    assert outcome.after_in_kafka == outcome.after_events > 0, "authenticated events still reach Kafka"
    assert outcome.ok


def test_watchdog_counts_a_crash_and_a_hang_and_the_campaign_goes_on(chaos_env: ChaosEnv) -> None:
    rig = start_rig(chaos_env)

    def fault(case: int) -> None:
        if case == 20:
            rig.mqtt.kill()  # a crash
        elif case == 60:
            rig.bridge.suspend()  # alive, answers nothing: a hang

    outcome = fuzz_mqtt_boofuzz(chaos_env, 120, rig=rig, after_case=fault, probe_every=20, hang_after_s=3.0)
    print("\n" + boofuzz_table(outcome))
    r = outcome.report
    assert r.crashes == ["after case 20: mosquitto exited"]
    assert r.hangs == ["after case 60: bridge: /healthz not ok for 3 s"]
    assert r.cases == 120, "both were restarted and the campaign went on"
    assert not outcome.ok
    assert outcome.after_in_kafka == outcome.after_events, "after the restarts traffic flows again"


def _varint_at(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = data[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not b & 0x80:
            return value, i


@pytest.mark.unit
def test_unmutated_v311_packets_are_byte_exact() -> None:
    r = build_requests(EP, v5=False)
    topic = "pfx/site/cam-1/events"
    assert r["connect-v311"].render() == connect("boofuzz", "user", "secret", v5=False)
    assert r["publish-q0-v311"].render() == publish(topic, EP.event_payload, qos=0, mid=1, v5=False)
    assert r["publish-q1-v311"].render() == publish(topic, EP.event_payload, qos=1, mid=1, v5=False)
    assert r["subscribe-v311"].render() == subscribe("pfx/site/+/events", 1, v5=False)


@pytest.mark.unit
@pytest.mark.parametrize("name", ["connect-v5", "publish-q0-v5", "publish-q1-v5", "subscribe-v5"])
def test_v5_remaining_length_is_the_body_length_also_when_a_field_is_mutated(name: str) -> None:
    req = build_requests(EP, v5=True)[name]
    longer = {f"{name}.body.username": "u" * 300, f"{name}.body.topic.cam": "c" * 300,
              f"{name}.body.topic_filter": "f" * 300}  # fmt: skip
    qn = next(k for k in longer if k in req.names)
    for ctx in (None, MutationContext(mutations={qn: Mutation(value=longer[qn], qualified_name=qn, index=0)})):
        data = req.render(ctx)
        length, start = _varint_at(data, 1)
        assert length == len(data) - start
    assert longer[qn].encode() in data


@pytest.mark.unit
def test_varint_mutations_include_overlong_and_off_by_one_lengths() -> None:
    req = build_requests(EP, v5=False)["subscribe-v311"]
    qn = "subscribe-v311.remaining_length"
    true_length = _varint_at(req.render(), 1)[0]

    def rendered(value: Any) -> bytes:
        return bytes(req.render(MutationContext(mutations={qn: Mutation(value=value, qualified_name=qn, index=0)})))

    overlong = rendered(("overlong", 0))
    assert overlong[1:5] == bytes([true_length | 0x80, 0x80, 0x80, 0x00])
    assert _varint_at(overlong, 1)[0] == true_length
    assert _varint_at(rendered(("delta", 1)), 1)[0] == true_length + 1
    assert rendered(b"\xff\xff\xff\xff\x7f")[1:6] == b"\xff\xff\xff\xff\x7f"
    assert len(list(req.names[qn].get_mutations())) == len(VARINT_MUTATIONS)


@pytest.mark.unit
def test_a_short_quota_still_mutates_every_field() -> None:
    for name, req in build_requests(EP, v5=True).items():
        fields = {f.qualified_name for f in req.walk() if f.fuzzable}
        req.quota = 3 * len(fields)
        mutated = [m[0].qualified_name for m in req.get_mutations()]
        assert len(mutated) == req.quota, name
        assert set(mutated) == fields, name
        # evenly spread: a string field's sample reaches its long strings, not just the library
        if name == "connect-v5":
            client_id = [m[0].value for m in req.get_mutations() if m[0].qualified_name.endswith(".client_id")]
            assert max(len(v) for v in client_id) > 1000


@pytest.mark.unit
def test_without_boofuzz_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.chaos import boofuzz_mqtt
    from pipeline.errors import ConfigError

    monkeypatch.setitem(sys.modules, "boofuzz", None)  # what `import boofuzz` sees without the dev extra
    assert not boofuzz_mqtt.boofuzz_available()
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[dev\]'"):
        build_requests(EP, v5=False)
