"""Fixtures of the compose tier: a Docker engine, the images, one compose project per module.

Slow by nature (a fresh machine: debootstrap ~4 min, image builds ~11 min; with the images
cached, builds ~3 min and the whole tier ~7 min), so the tier is marked ``compose``, left out
of ``./dev test`` and run by ``./dev test-compose`` (a later step of .ci/run). Image layers and
the base images stay in the engine between runs.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.local_stack.ports import free_port
from pipeline.settings import REPO_ROOT
from tests.compose.compose_helpers import (
    EDGE_IMAGE,
    LOCAL_IMAGES,
    PYTHON_BASE,
    AlertsCli,
    ComposeProject,
    engine_problem,
    host_env,
    run,
    wait_for,
)

BUILD_ENV = {"WHEELHOUSE_ONLY": "true", "LOCAL_PYTHON_IMAGE": PYTHON_BASE}


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = engine_problem()
    if problem:
        pytest.skip(f"compose tier needs a Docker engine: {problem}")


@pytest.fixture(scope="session")
def build_times(docker_engine: None) -> dict[str, float]:
    """Builds every image the tier needs (each step idempotent or cached); seconds per step."""
    times: dict[str, float] = {}
    # The file refuses to load without its mandatory secrets, even to build; none goes into an image.
    required = ("MQTT_BRIDGE_PASSWORD", "MQTT_CONSOLE_PASSWORD", "POSTGRES_PASSWORD", "CONSOLE_SESSION_SECRET")
    env = {**os.environ, **BUILD_ENV, **dict.fromkeys(required, "build-only")}

    def step(name: str, cmd: list[str], timeout: float) -> None:
        t0 = time.monotonic()
        run(cmd, timeout=timeout, env=env)
        times[name] = round(time.monotonic() - t0, 1)

    step("base images", [str(LOCAL_IMAGES / "build-base-images.sh")], 1200)
    step("wheelhouse", [str(LOCAL_IMAGES / "make-wheelhouse.sh")], 1800)
    step("compose build", ComposeProject("evp-build", BUILD_ENV, Path()).cmd("build"), 2400)
    step(
        "edge image",
        ["docker", "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={PYTHON_BASE}",
         "--build-arg", "WHEELHOUSE_ONLY=true", "-f", str(REPO_ROOT / "Dockerfile.edge"), "-t", EDGE_IMAGE,
         str(REPO_ROOT)],
        1800,
    )  # fmt: skip
    print(f"compose tier build steps (s): {times}")
    return times


@pytest.fixture(scope="module")
def project(build_times: dict[str, float], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeProject]:
    """A compose project with fresh passwords and free host ports; `down -v` when the module ends."""
    tmp = tmp_path_factory.mktemp("compose")
    env = {
        "MQTT_BRIDGE_PASSWORD": secrets.token_hex(12),
        "MQTT_ALERTS_PASSWORD": secrets.token_hex(12),
        "MQTT_EDGE_USERS": f"node-1:{secrets.token_hex(12)}",
        "MQTT_CONSOLE_PASSWORD": secrets.token_hex(12),
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "CONSOLE_SESSION_SECRET": secrets.token_hex(16),
        "CONSOLE_HOST_PORT": str(free_port()),
        "MQTT_HOST_PORT": str(free_port()),
        "KAFKA_HOST_PORT": str(free_port()),
        "PROMETHEUS_HOST_PORT": str(free_port()),
    }
    env_file = tmp / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    proj = ComposeProject(f"evp-test-{os.getpid()}", BUILD_ENV, REPO_ROOT / "out" / "compose-logs", env_file, env)
    try:
        yield proj
    finally:
        if proj.containers():
            print(f"compose logs: {proj.save_logs()}")
        proj.compose("down", "-v", "--remove-orphans", "--timeout", "30")


@pytest.fixture(scope="module")
def stack(project: ComposeProject) -> ComposeProject:
    """`docker-compose up -d`, then every health check passing."""
    project.compose("up", "-d", "--no-build")
    wait_for(project.all_ready, 300, f"every service healthy: {project.health()}")
    return project


@pytest.fixture(scope="module")
def alerts_cli(stack: ComposeProject, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertsCli]:
    cli = AlertsCli(tmp_path_factory.mktemp("alerts") / "alerts.jsonl")
    cli.start(host_env(stack, "alerts", stack.values["MQTT_ALERTS_PASSWORD"]))
    try:
        yield cli
    finally:
        cli.stop()
