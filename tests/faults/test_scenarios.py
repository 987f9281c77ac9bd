"""The fault scenarios of ``pipeline chaos`` (pipeline/chaos/scenarios.py) with small streams:
every event id reaches Kafka, exactly the expected alert ids reach the MQTT subscriber, and each
scenario's own checks hold (see docs/faults.md)."""

from __future__ import annotations

import pytest

from pipeline.chaos.rig import ChaosEnv
from pipeline.chaos.scenario_steps import ScenarioResult
from pipeline.chaos.scenarios import SCENARIOS, format_table

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

N = 48  # events per scenario: 16 tracks (alerts) over the stream's cameras


def check(result: ScenarioResult) -> None:
    print("\n" + format_table([result]))
    assert result.missing_events == 0, "every event id reaches Kafka"
    if result.alerts_expected is not None:
        assert result.alerts_expected > 0
        assert result.alerts_received == result.alerts_expected, "every expected alert id arrives"
    assert result.unexpected_alerts == 0, "no alert ids besides the expected ones"
    assert result.lost == 0
    failed = [k for k, v in result.checks.items() if not v]
    assert not failed, failed


def test_mosquitto_sigkill_and_restart(chaos_env: ChaosEnv) -> None:
    check(SCENARIOS["mosquitto-crash"](chaos_env, N))


def test_link_down_outbox_drains(chaos_env: ChaosEnv) -> None:
    # The outbox publishes in seq order, but per-camera order in Kafka is not asserted: after a
    # broker restart Mosquitto may deliver new messages ahead of ones queued in the bridge's
    # session (docs/faults.md, findings); the scenario reports such inversions in its notes.
    check(SCENARIOS["link-down"](chaos_env, N))


def test_edge_killed_with_full_outbox_resumes(chaos_env: ChaosEnv) -> None:
    check(SCENARIOS["edge-crash"](chaos_env, N))


def test_bridge_sigkill_and_restart(chaos_env: ChaosEnv) -> None:
    check(SCENARIOS["bridge-crash"](chaos_env, N))


@pytest.mark.slow
def test_two_bridges_one_killed(chaos_env: ChaosEnv) -> None:
    check(SCENARIOS["bridge-pair"](chaos_env, N))


def test_kafka_restart_bridge_holds_acks(chaos_env: ChaosEnv) -> None:
    check(SCENARIOS["kafka-restart"](chaos_env, N))


@pytest.mark.slow
def test_one_of_two_faust_workers_killed(chaos_env: ChaosEnv) -> None:
    check(SCENARIOS["worker-crash"](chaos_env, N))


@pytest.mark.slow
def test_model_server_killed_breaker_opens_and_closes(chaos_env: ChaosEnv) -> None:
    check(SCENARIOS["model-server-crash"](chaos_env, 30))


def test_flaky_link_through_proxy(chaos_env: ChaosEnv) -> None:
    result = SCENARIOS["flaky-link"](chaos_env, N)
    check(result)
    print(result.measures)
