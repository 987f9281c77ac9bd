"""`docker-compose up` of docker-compose.yml on a real Docker engine, with the local-images
override (no registry here): build, start, health checks, the sample clip from a `pipeline edge`
on the host to exact alert ids from `pipeline alerts`, Prometheus scraping that run's counts from
the bridge and the worker, a scaled worker SIGKILLed, the bridge's process killed and restarted by
`restart: unless-stopped`, and `down -v` leaving nothing.

The tests of this module share one compose project and run in file order (each builds on the
state the previous one left: the stack up, then scaled). Runs on the same camera are told apart
by event time: every run starts after the previous one's alerts all arrived.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.operators.schema import Event
from pipeline.settings import SAMPLE_CLIP, CloudSettings
from pipeline.testing import expected_presence_alerts
from tests.compose.compose_helpers import (
    EDGE_IMAGE,
    MODEL_STATUS,
    PROJECT_IMAGE,
    AlertsCli,
    ComposeProject,
    host_env,
    run,
    wait_for,
)

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(3600)]

# postgres, history and console sit behind the compose profile "console", prometheus behind
# "observability" (docker-compose.yml); the tier enables both (ComposeProject.cmd).
SERVICES = {
    "mosquitto-passwd", "mosquitto", "kafka", "kafka-init", "tfserving", "bridge", "cloud",
    "postgres", "history", "console", "prometheus",
}  # fmt: skip
CONSOLE_USER = ("compose-test", "compose-test")  # tests/compose/console-users
RULE = CloudSettings().rules[0]  # the compose file sets no rules: the default presence rule runs
# Run inside the bridge container: the bridge's own /metrics (compose sets its health port, 9108).
BRIDGE_METRICS = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9108/metrics').read().decode())"


@dataclass
class EdgeRun:
    cam: str
    started_ms: int
    proc: subprocess.Popen[str]

    def finish(self, timeout_s: float = 300) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout_s)
        assert self.proc.returncode == 0, f"pipeline edge exited {self.proc.returncode}:\n{err[-3000:]}"
        summary: dict[str, Any] = json.loads(out[out.index("{") :])
        return summary


def start_edge(project: ComposeProject, cam: str, tmp: Path) -> EdgeRun:
    """`pipeline edge` on the host: the sample clip as camera ``cam`` of node-1 (ACL: cam-1, cam-2)."""
    camera = {"id": cam, "source": str(SAMPLE_CLIP), "realtime": False, "detect_fps": 5.0}
    env = host_env(
        project,
        "node-1",
        project.values["MQTT_EDGE_USERS"].split(":", 1)[1],
        PIPELINE_EDGE__CAMERAS=json.dumps([camera]),
        PIPELINE_EDGE__FINAL_ACK_WAIT_S="180",  # a killed bridge must come back and ack the rest
        PIPELINE_EDGE__MODEL_DIR=str(tmp / "models"),
        PIPELINE_LOCAL__RUN_DIR=str(tmp / "run"),
    )
    started_ms = int(time.time() * 1000)
    outbox = str(tmp / f"outbox-{cam}.sqlite")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "pipeline"), "edge", "--json", "--outbox", outbox],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    return EdgeRun(cam, started_ms, proc)


def run_events(project: ComposeProject, run_: EdgeRun) -> dict[str, Event]:
    """The run's events in the order the worker takes them (first copy of each id), by event id."""
    return {e.id: e for e in project.events_in_kafka() if e.cam == run_.cam and e.ts >= run_.started_ms}


def check_exact_alerts(project: ComposeProject, alerts: AlertsCli, run_: EdgeRun, summary: dict[str, Any]) -> None:
    """Every event reached Kafka, and `pipeline alerts` printed exactly the ids the rule implies."""
    assert summary["events"] > 10, "the sample clip should produce events"
    assert summary["outbox_depth"] == 0, "every event was acknowledged after Kafka took it"
    events = run_events(project, run_)
    assert len(events) == summary["events"], "each event the edge stored reached Kafka (duplicates allowed)"
    # In arrival order: after the bridge's crash the edge replays what was not acknowledged behind
    # newer events, and the event that opens an incident (hence the alert id) follows that order.
    expected = expected_presence_alerts(events.values(), RULE, fused=lambda e: e.score, arrival_order=True)
    assert expected, "people walk through the sample clip: the rule must fire"

    def of_run() -> dict[str, dict[str, Any]]:
        return {k: a for k, a in alerts.alerts().items() if a["event_id"] in events}

    awaited = lambda: f"alerts {sorted(expected)} (have {sorted(of_run())})"  # noqa: E731
    wait_for(lambda: set(of_run()) >= set(expected), 240, awaited)
    time.sleep(5)  # a quiet spell: anything extra would show up now (the worker is idle)
    got = of_run()
    assert set(got) == set(expected), "alert ids are exactly those the rule implies"
    for aid, alert in got.items():
        assert alert["event_id"] == expected[aid]
        assert alert["cam"] == run_.cam and alert["rule"] == RULE.id
        assert alert["verification"] == "not_escalated"


def first_alert_of(alerts: AlertsCli, run_: EdgeRun) -> bool:
    return any(a["cam"] == run_.cam and a["event_ts"] >= run_.started_ms for a in alerts.alerts().values())


def test_images_build_on_local_base_from_wheelhouse(build_times: dict[str, float]) -> None:
    """Both project images: Debian's Python (not python:3.11-slim), non-root, right extras."""

    def in_image(image: str, *cmd: str) -> str:
        return run(["docker", "run", "--rm", "--entrypoint", cmd[0], image, *cmd[1:]], timeout=120).stdout

    for image in (PROJECT_IMAGE, EDGE_IMAGE):
        assert in_image(image, "readlink", "-f", "/opt/venv/bin/python").strip() == "/usr/bin/python3.11"
        assert in_image(image, "id", "-u").strip() == "10001"
    for command in ("bridge", "cloud", "model-server"):
        assert f"usage: pipeline {command}" in in_image(PROJECT_IMAGE, "pipeline", command, "--help")
    assert "usage: pipeline edge" in in_image(EDGE_IMAGE, "pipeline", "edge", "--help")
    no_tf = "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow') is not None)"
    in_image(EDGE_IMAGE, "python", "-c", no_tf)


def test_every_service_becomes_healthy(stack: ComposeProject) -> None:
    assert stack.services() == SERVICES
    status = stack.exec_python("cloud", MODEL_STATUS, timeout=180)
    assert "AVAILABLE" in status, f"model server reached from a worker over compose DNS: {status}"


def test_edge_on_host_gets_exact_alerts(stack: ComposeProject, alerts_cli: AlertsCli, tmp_path: Path) -> None:
    edge = start_edge(stack, "cam-1", tmp_path)
    check_exact_alerts(stack, alerts_cli, edge, edge.finish())


def test_history_and_console_show_the_alerts(stack: ComposeProject, alerts_cli: AlertsCli) -> None:
    """`pipeline history` stored the run's alerts in PostgreSQL, and the console, logged in over
    HTTP as the test's viewer (CSRF token, session cookie), shows each of them."""
    import http.cookiejar
    import re
    import urllib.parse
    import urllib.request

    alert_ids = sorted(alerts_cli.alerts())
    assert alert_ids, "the previous test's run raised alerts"
    url = f"http://127.0.0.1:{stack.values['CONSOLE_HOST_PORT']}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = opener.open(url + "/login", timeout=10).read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token, form[:500]
    user, password = CONSOLE_USER
    login = urllib.parse.urlencode({"username": user, "password": password, "csrf": token.group(1)}).encode()
    landed = opener.open(urllib.request.Request(url + "/login", data=login), timeout=30)
    assert landed.status == 200 and not landed.url.endswith("/login"), "the viewer logs in"

    def shown(alert_id: str) -> bool:
        try:
            page = opener.open(url + "/alerts/" + urllib.parse.quote(alert_id, safe=""), timeout=10)
        except urllib.error.HTTPError:
            return False  # 404 until the history consumer has stored it
        return page.status == 200 and alert_id in page.read().decode()

    for alert_id in alert_ids:
        wait_for(functools.partial(shown, alert_id), 120, f"alert {alert_id} in the console's history")
    listing = opener.open(url + "/history", timeout=10).read().decode()
    assert f'<p id="history-total">{len(alert_ids)} alerts, page 1' in listing, listing[:800]


def prometheus_api(project: ComposeProject, path: str, **params: str) -> Any:
    """``data`` of one answer of Prometheus's HTTP API on its published port."""
    url = f"http://127.0.0.1:{project.values['PROMETHEUS_HOST_PORT']}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_scrapes_the_run_from_bridge_and_worker(stack: ComposeProject, alerts_cli: AlertsCli) -> None:
    """Prometheus (profile "observability") finds the bridge and the worker through compose DNS
    (deploy/prometheus/prometheus.yml), scrapes both, and holds the counts the first run moved:
    the bridge's events acknowledged by Kafka, equal to what the bridge itself serves, and the
    records the worker took. Polled: scrapes come every 15 s (the production interval)."""
    assert alerts_cli.alerts(), "the edge run above sent traffic through the pipeline"

    def health_by_job() -> dict[str, list[str]]:
        active = prometheus_api(stack, "targets", state="active")["activeTargets"]
        return {job: [t["health"] for t in active if t["labels"]["job"] == job] for job in ("bridge", "cloud")}

    def all_up() -> bool:
        return all(health and set(health) == {"up"} for health in health_by_job().values())

    wait_for(all_up, 90, lambda: f"the bridge and cloud targets up in Prometheus: {health_by_job()}")

    def scraped(metric: str, job: str) -> float | None:
        result = prometheus_api(stack, "query", query=f'sum({metric}{{job="{job}"}})')["result"]
        return float(result[0]["value"][1]) if result else None

    def served_by_bridge(metric: str) -> float:
        lines = stack.exec_python("bridge", BRIDGE_METRICS).splitlines()
        return sum(float(line.split()[-1]) for line in lines if line.split(" ")[0].split("{")[0] == metric)

    produced = "pipeline_bridge_uplink_produced_total"

    def in_sync() -> bool:  # the edge run is over: the bridge's count stays put, a scrape catches up
        return scraped(produced, "bridge") == served_by_bridge(produced)

    def compared() -> str:
        return f"{produced} in Prometheus ({scraped(produced, 'bridge')}) = the bridge's ({served_by_bridge(produced)})"

    wait_for(in_sync, 90, compared, step_s=3.0)
    assert (scraped(produced, "bridge") or 0) > 0, "the bridge produced the run's events to Kafka"
    taken = "pipeline_cloud_events_total"
    wait_for(lambda: (scraped(taken, "cloud") or 0) > 0, 90, f"{taken} > 0 scraped from the worker")


def test_scaled_worker_sigkilled_loses_no_alert(stack: ComposeProject, alerts_cli: AlertsCli, tmp_path: Path) -> None:
    stack.compose("up", "-d", "--no-build", "--no-recreate", "--scale", "cloud=2")
    two_workers = lambda: len(stack.containers("cloud")) == 2 and stack.all_ready()  # noqa: E731
    wait_for(two_workers, 300, "two healthy workers")
    edge = start_edge(stack, "cam-2", tmp_path)
    wait_for(lambda: first_alert_of(alerts_cli, edge), 240, "the first alert of the run")
    victim = stack.containers("cloud", all_states=False)[0]["Id"]
    run(["docker", "kill", "--signal", "KILL", victim], timeout=30)
    check_exact_alerts(stack, alerts_cli, edge, edge.finish())


def test_bridge_process_killed_restarts_and_loses_nothing(
    stack: ComposeProject, alerts_cli: AlertsCli, tmp_path: Path
) -> None:
    (bridge,) = stack.containers("bridge", all_states=False)
    restarts = bridge["RestartCount"]
    edge = start_edge(stack, "cam-1", tmp_path)
    wait_for(lambda: first_alert_of(alerts_cli, edge), 240, "the first alert of the run")
    # SIGKILL the bridge's process (PID 1 of its container; from the host, because a container's
    # init ignores SIGKILL sent from inside): a crash, which the restart policy must repair.
    os.kill(bridge["State"]["Pid"], signal.SIGKILL)

    def restarted() -> bool:
        (b,) = stack.containers("bridge")
        return bool(b["RestartCount"] > restarts and b["State"].get("Health", {}).get("Status") == "healthy")

    wait_for(restarted, 180, "the bridge restarted by `restart: unless-stopped` and healthy again")
    check_exact_alerts(stack, alerts_cli, edge, edge.finish())
    # Minutes after `up --scale` re-ran the one-shot jobs, every service but the worker killed
    # on purpose is still healthy (the re-run once changed Mosquitto's health-check password).
    killed = [c["Name"] for c in stack.containers("cloud") if c["State"]["Status"] == "exited"]
    states = {name: st for name, st in stack.health().items() if f"/{name}" not in killed}
    assert all(st in ("healthy", "exited 0") for st in states.values()), states


def test_down_leaves_nothing(stack: ComposeProject) -> None:
    stack.save_logs()  # out/compose-logs/: what the containers said, before down removes them
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "30")
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
