"""Each project service of docker-compose.yml runs, outside Docker, as the compose file says.

For `bridge` and `cloud`: the command is a registered `pipeline` subcommand whose --help works,
and the same argv with the same environment (the compose `environment:` block interpolated with
.env.example, plus what the image and its entry point add) starts against the local stack until
the service's own compose health check passes. Only the addresses change: compose DNS names
become the local brokers' loopback ports (and fixed ports free ones), which is what the
container network would resolve them to.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pipeline.local_stack.child_process import ChildProcess
from pipeline.local_stack.kafka_topics import ensure_topics
from pipeline.local_stack.ports import free_port
from pipeline.settings import REPO_ROOT, KafkaSettings
from tests.deploy.deploy_helpers import PROJECT_SERVICES, service_environment


def _load_healthcheck() -> ModuleType:
    """deploy/healthcheck.py, the probe the compose health checks run: a script, not a package."""
    spec = importlib.util.spec_from_file_location("healthcheck", REPO_ROOT / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load_healthcheck()

# What the image adds to the compose environment (Dockerfile ENV, deploy/docker-entrypoint.sh).
IMAGE_ENV_KEYS = ("PIPELINE_CLOUD__DATA_DIR", "PIPELINE_LOCAL__RUN_DIR", "PIPELINE_BRIDGE__CLIENT_ID")
# A line each service logs once it serves, on top of its health check.
READY_LOG = {"bridge": r"bridge \S+: MQTT .* -> Kafka", "cloud": r"cloud stage ready"}


def _subcommands() -> set[str]:
    from pipeline.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")  # argparse has no public API for it
    assert action.choices is not None  # the subparsers' action: its choices are the subcommands
    return set(action.choices)


@pytest.mark.integration
@pytest.mark.parametrize("service", PROJECT_SERVICES)
def test_compose_command_is_a_pipeline_subcommand_with_help(compose: dict[str, Any], service: str) -> None:
    argv = compose["services"][service]["command"]
    assert isinstance(argv, list) and argv, f"{service}: command must be an exec-form list"
    subcommand = next(a for a in argv if not a.startswith("-"))
    assert subcommand in _subcommands(), f"`pipeline {subcommand}` is not registered in pipeline.cli"
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv, "--help"],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"usage: pipeline {subcommand}" in out.stdout


class ComposeServiceProcess(ChildProcess):
    """``pipeline <compose command>`` with a given environment; ready when its health check passes."""

    def __init__(self, name: str, data_dir: Path, argv: list[str], env: dict[str, str], health: str) -> None:
        self.name = name
        self.argv = argv
        self._env = env
        self.health = health
        self.ready_log = re.compile(READY_LOG[name])
        super().__init__(data_dir, 0, start_timeout_s=90.0, stop_timeout_s=30.0)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pipeline.cli", *self.argv]

    def env(self) -> dict[str, str]:
        return self._env

    def probe(self) -> bool:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        return bool(self.ready_log.search(text)) and healthcheck.probe(self.health, timeout_s=1.0)[0]

    def exit_code(self) -> int | None:
        proc = self._proc
        code = self.stop()
        return code if code is not None else (proc.returncode if proc is not None else None)


def _local_environment(
    name: str, compose_env: dict[str, str], request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[dict[str, str], str]:
    """The compose environment with compose DNS names and fixed ports replaced by the local stack's."""
    mqtt = request.getfixturevalue("mqtt_broker")
    kafka = request.getfixturevalue("kafka_broker")
    run_id = uuid.uuid4().hex[:8]
    env = dict(compose_env)
    translated = {
        "PIPELINE_MQTT__HOST": mqtt.host,
        "PIPELINE_MQTT__PORT": str(mqtt.port),
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
    }
    for key, value in translated.items():
        assert key in env, f"{name}: compose sets no {key}"
        env[key] = value
    if name == "cloud" and (REPO_ROOT / "models" / "models.config").is_file():
        env["PIPELINE_MODEL_SERVER__ADDRESS"] = request.getfixturevalue("model_server").address
    else:  # the bridge never calls it; without models the worker starts anyway (alerts 'unverified')
        env["PIPELINE_MODEL_SERVER__ADDRESS"] = f"127.0.0.1:{free_port()}"
    health_port = free_port()
    if name == "bridge":
        env["PIPELINE_BRIDGE__HEALTH_PORT"] = str(health_port)
        health = f"http://127.0.0.1:{health_port}/healthz"
    else:
        env["PIPELINE_CLOUD__WEB_PORT"] = str(health_port)
        health = f"tcp://127.0.0.1:{health_port}"
    # What the image adds, pointed at this test's directories; ids unique to this test run so it
    # shares no MQTT topics, Kafka topics or consumer groups with other tests on the same brokers.
    env["PIPELINE_CLOUD__DATA_DIR"] = str(tmp_path / "faust")
    env["PIPELINE_LOCAL__RUN_DIR"] = str(tmp_path / "run")
    env["PIPELINE_BRIDGE__CLIENT_ID"] = f"bridge-{run_id}"
    env["PIPELINE_MQTT__TOPIC_PREFIX"] = f"d{run_id}"
    env["PIPELINE_CLOUD__APP_ID"] = f"d{run_id}-cloud"
    for kind in ("EVENTS", "ALERTS", "CONFIG", "DEAD_LETTER"):
        env[f"PIPELINE_KAFKA__{kind}_TOPIC"] = f"d{run_id}.{kind.lower()}"
    # The local stack's consumer-group timeouts (docs/dependencies.md: a group joins in ~4 s, not ~30 s).
    env["PIPELINE_KAFKA__FAST_GROUP_JOIN"] = "true"
    return env, health


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("service", PROJECT_SERVICES)
def test_compose_service_starts_against_the_local_stack(
    compose: dict[str, Any], env_example: dict[str, str], service: str,
    request: pytest.FixtureRequest, tmp_path: Path,
) -> None:  # fmt: skip
    svc = compose["services"][service]
    compose_env = service_environment(svc, env_example)
    for key in IMAGE_ENV_KEYS:
        assert key not in compose_env, f"{key} is set by the image, not compose"
    env, health = _local_environment(service, compose_env, request, tmp_path)
    # The kafka-init step, translated: the project topics with the compose partition count.
    kafka = KafkaSettings(
        bootstrap_servers=env["PIPELINE_KAFKA__BOOTSTRAP_SERVERS"],
        partitions=int(env["PIPELINE_KAFKA__PARTITIONS"]),
        replication_factor=int(env["PIPELINE_KAFKA__REPLICATION_FACTOR"]),
        events_topic=env["PIPELINE_KAFKA__EVENTS_TOPIC"],
        alerts_topic=env["PIPELINE_KAFKA__ALERTS_TOPIC"],
        config_topic=env["PIPELINE_KAFKA__CONFIG_TOPIC"],
        dead_letter_topic=env["PIPELINE_KAFKA__DEAD_LETTER_TOPIC"],
    )
    ensure_topics(kafka)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    proc = ComposeServiceProcess(service, tmp_path / "svc", list(svc["command"]), {**base, **env}, health)
    with proc:
        # Healthy and staying healthy: three passes a second apart (compose: interval, retries).
        for _ in range(3):
            time.sleep(1.0)
            ok, message = healthcheck.probe(health)
            assert ok and proc.running, f"{message}\n{proc.log_tail(40)}"
        code = proc.exit_code()
    # SIGTERM (what `docker compose stop` sends) ends it cleanly within stop_grace_period.
    assert code == 0, proc.log_tail(40)
