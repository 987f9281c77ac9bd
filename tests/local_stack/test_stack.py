"""The whole local stack: in-process (LocalStack) and detached (`pipeline stack up|status|down`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaAdminClient
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.local_stack.ports import port_open
from pipeline.local_stack.stack import LocalStack, status_rows
from pipeline.settings import REPO_ROOT, Settings, load_settings

pytestmark = pytest.mark.integration


def test_local_stack_wires_settings_and_creates_topics(tmp_path: Path) -> None:
    with LocalStack(Settings(), tmp_path / "run", model_server=False) as stack:
        s = stack.settings
        assert s.mqtt.port == stack.mosquitto.port
        assert s.kafka.bootstrap_servers == stack.tansu.bootstrap
        assert s.kafka.fast_group_join
        # Other processes load the same settings from the file the stack wrote.
        assert load_settings(stack.settings_file) == s
        admin = KafkaAdminClient(**s.kafka.client_kwargs())
        try:
            assert {s.kafka.events_topic, s.kafka.alerts_topic, s.kafka.config_topic, s.kafka.dead_letter_topic} <= set(
                admin.list_topics()
            )
        finally:
            admin.close()
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.connect(s.mqtt.host, s.mqtt.port)
        client.disconnect()
        recorded = json.loads(stack.stack_file.read_text())
        assert recorded["processes"]["tansu"]["port"] == stack.tansu.port
    assert not stack.stack_file.exists()
    assert not port_open("127.0.0.1", stack.mosquitto.port)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )


def test_stack_up_status_down_detached(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    try:
        up = _cli("stack", "up", "--run-dir", str(run_dir), "--no-model-server")
        assert up.returncode == 0, up.stderr
        assert "settings: --config" in up.stdout
        rows = status_rows(run_dir)
        assert {r.name for r in rows} == {"mosquitto", "tansu"}
        assert all(r.alive and r.answering for r in rows)
        status = _cli("stack", "status", "--run-dir", str(run_dir))
        assert status.returncode == 0, status.stdout + status.stderr
        again = _cli("stack", "up", "--run-dir", str(run_dir), "--no-model-server")
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        down = _cli("stack", "down", "--run-dir", str(run_dir))
    assert down.returncode == 0, down.stderr
    assert "stopped: mosquitto, tansu" in down.stdout
    assert not any(port_open("127.0.0.1", r.port) for r in rows)
    assert _cli("stack", "status", "--run-dir", str(run_dir)).returncode == 1


def test_make_settings_isolates_tests(make_settings: Callable[..., Settings]) -> None:
    a, b = make_settings(), make_settings(edge={"site": "s9"}, kafka={"partitions": 2})
    assert a.mqtt.topic_prefix != b.mqtt.topic_prefix
    assert a.kafka.events_topic != b.kafka.events_topic
    assert b.edge.site == "s9" and b.kafka.partitions == 2
    assert b.kafka.bootstrap_servers == a.kafka.bootstrap_servers and b.kafka.fast_group_join


def test_a_service_is_ready_when_it_says_so_not_when_a_log_line_appears(tmp_path: Path) -> None:
    """PipelineService waits for the ready file the command writes (pipeline.readiness)."""
    import sys

    from pipeline.local_stack.pipeline_service import PipelineService

    class Sleeper(PipelineService):
        def command(self) -> list[str]:
            code = ("import sys, time; print('ready ready ready', flush=True); time.sleep(0.3);"
                    " from pipeline.readiness import mark_ready; mark_ready('sleeper'); time.sleep(60)")  # fmt: skip
            return [sys.executable, "-c", code]

    svc = Sleeper("sleeper", tmp_path, tmp_path / "unused.yaml", [], start_timeout_s=30)
    svc.ready_file.parent.mkdir(parents=True, exist_ok=True)
    svc.ready_file.write_text("1 stale\n")  # left by an earlier run: prepare() removes it
    with svc:
        assert svc.ready_file.read_text() == f"{svc.pid} sleeper\n"
        assert svc.startup_s is not None and svc.startup_s >= 0.3, "the log line alone did not count"
