"""Drive `docker-compose` (Debian's 1.29, v1) and the containers of one project from the tests.

Everything goes through the real CLIs (`docker-compose`, `docker`) and real processes on the
host (`pipeline edge`, `pipeline alerts`), the way an operator would run them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.operators.schema import Event, Rejected, decode_event
from pipeline.settings import REPO_ROOT
from pipeline.testing import wait_until

LOCAL_IMAGES = REPO_ROOT / "deploy" / "local-images"
COMPOSE_FILES = [
    REPO_ROOT / "docker-compose.yml",
    REPO_ROOT / "deploy" / "compose" / "local-images.yml",
    Path(__file__).with_name("test-settings.yml"),
]
PROJECT_IMAGE = "edge-vision-pipeline:0.1.0"
EDGE_IMAGE = "edge-vision-pipeline-edge:0.1.0"
PYTHON_BASE = "evp-local/python:3.11-bookworm"
ONE_SHOT = {"mosquitto-passwd", "kafka-init"}

# Run inside the bridge container (it has kafka-python and the settings of the compose network):
# every record of the events topic as "partition offset base64" lines, read until three polls
# come back empty (Tansu reports end offsets wrongly, as tests/e2e notes).
READ_EVENTS = """
import base64
from kafka import KafkaConsumer, TopicPartition
from pipeline.settings import load_settings
k = load_settings(None).kafka
c = KafkaConsumer(**k.client_kwargs(), enable_auto_commit=False, group_id=None)
parts = [TopicPartition(k.events_topic, p) for p in sorted(c.partitions_for_topic(k.events_topic) or [])]
c.assign(parts)
c.seek_to_beginning(*parts)
idle = 0
while idle < 3:
    batch = c.poll(timeout_ms=1000)
    idle = 0 if batch else idle + 1
    for records in batch.values():
        for r in records:
            print(r.partition, r.offset, base64.b64encode(r.value).decode())
c.close()
"""

# Run inside a cloud container: the model server's status over TF Serving's gRPC API, as the
# worker reaches it (compose DNS name tfserving).
MODEL_STATUS = """
import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel("tfserving:8500"))
req = get_model_status_pb2.GetModelStatusRequest()
req.model_spec.name = "centernet"
resp = stub.GetModelStatus(req, timeout=60)
for v in resp.model_version_status:
    print(v.version, get_model_status_pb2.ModelVersionStatus.State.Name(v.state))
"""


def run(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None, stdin: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def engine_problem() -> str | None:
    """None when a Docker engine answers (started as root if needed), else why not."""
    out = subprocess.run([str(LOCAL_IMAGES / "start-dockerd.sh")], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        return (out.stderr or out.stdout).strip() or "no Docker engine"
    if subprocess.run(["which", "docker-compose"], capture_output=True, check=False).returncode != 0:
        return "docker-compose (Debian package docker-compose) is not installed"
    return None


@dataclass
class ComposeProject:
    """One `docker-compose -p NAME` project on the three files, with its own .env file."""

    name: str
    env: dict[str, str]  # for the docker-compose process (build arguments)
    log_dir: Path
    env_file: Path | None = None
    values: dict[str, str] = field(default_factory=dict)  # what env_file holds

    def cmd(self, *args: str) -> list[str]:
        files = [a for f in COMPOSE_FILES for a in ("-f", str(f))]
        env_file = ["--env-file", str(self.env_file)] if self.env_file else []
        # the profiles too: "console" (the alert history in PostgreSQL and the operator console) and
        # "observability" (Prometheus scraping the bridge and the workers)
        profiles = ["--profile", "console", "--profile", "observability"]
        return ["docker-compose", "-p", self.name, *files, *env_file, *profiles, *args]

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run(self.cmd(*args), timeout=timeout, env={**os.environ, **self.env})

    def containers(self, service: str | None = None, *, all_states: bool = True) -> list[dict[str, Any]]:
        """`docker inspect` of the project's containers (optionally one service's)."""
        filters = ["--filter", f"label=com.docker.compose.project={self.name}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = run(["docker", "ps", "-q", *(["-a"] if all_states else []), *filters], timeout=30).stdout.split()
        if not ids:
            return []
        return list(json.loads(run(["docker", "inspect", *ids], timeout=30).stdout))

    def health(self) -> dict[str, str]:
        """container name -> 'healthy' / 'starting' / 'unhealthy' / 'exited N' / other state."""
        return {c["Name"].lstrip("/"): _state(c) for c in self.containers()}

    def services(self) -> set[str]:
        return {c["Config"]["Labels"]["com.docker.compose.service"] for c in self.containers()}

    def all_ready(self) -> bool:
        """Every long-running service healthy, every one-shot job exited 0."""
        containers = self.containers()

        def want(c: dict[str, Any]) -> str:
            return "exited 0" if c["Config"]["Labels"]["com.docker.compose.service"] in ONE_SHOT else "healthy"

        return bool(containers) and all(_state(c) == want(c) for c in containers)

    def exec_python(self, service: str, script: str, timeout: float = 120) -> str:
        """Run ``script`` with the python of one running container of ``service``."""
        (cid,) = [c["Id"] for c in self.containers(service, all_states=False)][:1]
        return run(["docker", "exec", "-i", cid, "python", "-"], stdin=script, timeout=timeout).stdout

    def events_in_kafka(self) -> list[Event]:
        """The events topic in the order the worker takes it: by partition and offset, the first
        copy of each event id (the worker drops later copies by id)."""
        records = []
        for line in self.exec_python("bridge", READ_EVENTS).splitlines():
            partition, offset, value = line.split()
            records.append((int(partition), int(offset), value))
        events: dict[str, Event] = {}
        for _, _, value in sorted(records):
            decoded = decode_event(base64.b64decode(value))
            assert not isinstance(decoded, Rejected), f"undecodable record in the events topic: {decoded}"
            events.setdefault(decoded.id, decoded)
        return list(events.values())

    def save_logs(self) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{self.name}.log"
        out = run(self.cmd("logs", "--no-color", "--timestamps"), timeout=120, env={**os.environ, **self.env},
                  check=False)  # fmt: skip
        path.write_text(out.stdout + out.stderr)
        return path

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes that still carry this project's label."""
        label = f"label=com.docker.compose.project={self.name}"
        return {
            kind: run(["docker", *cmd, "--filter", label], timeout=30).stdout.split()
            for kind, cmd in (
                ("containers", ["ps", "-aq"]),
                ("networks", ["network", "ls", "-q"]),
                ("volumes", ["volume", "ls", "-q"]),
            )
        }


@dataclass
class AlertsCli:
    """`pipeline alerts --json` on the host, its output collected from a file."""

    out: Path
    proc: subprocess.Popen[bytes] | None = None
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)

    def start(self, env: dict[str, str]) -> None:
        self._fh = self.out.open("wb")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "pipeline"), "alerts", "--json"],
            stdout=self._fh, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
        )  # fmt: skip

    def alerts(self) -> dict[str, dict[str, Any]]:
        """alert id -> alert (first copy) of every JSON line so far."""
        for line in self.out.read_text().splitlines():
            if line.startswith("{"):
                alert = json.loads(line)
                self.seen.setdefault(alert["id"], alert)
        return self.seen

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self._fh.close()


def _state(container: dict[str, Any]) -> str:
    state = container["State"]
    if state["Status"] == "exited":
        return f"exited {state['ExitCode']}"
    return str(state.get("Health", {}).get("Status", state["Status"]))


def host_env(project: ComposeProject, user: str, password: str, **extra: str) -> dict[str, str]:
    """Environment of a `pipeline` command on the host, against the published Mosquitto port."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")},
        "PIPELINE_MQTT__HOST": "127.0.0.1",
        "PIPELINE_MQTT__PORT": project.values["MQTT_HOST_PORT"],
        "PIPELINE_MQTT__USERNAME": user,
        "PIPELINE_MQTT__PASSWORD": password,
        **extra,
    }


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str | Callable[[], str], step_s: float = 2.0) -> None:
    """:func:`pipeline.testing.wait_until` that fails with what was awaited (``what``, or what it
    returns at the time out)."""
    if not wait_until(pred, timeout_s, step_s):
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what() if callable(what) else what}")
