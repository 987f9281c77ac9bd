"""The repo's Mosquitto config, ACLs and password script, run by a real Mosquitto (Debian 2.0.x).

The compose file mounts deploy/mosquitto/ into eclipse-mosquitto:2; here the same files run with
the container paths pointed at a temporary directory and the listener on a free loopback port.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pipeline.local_stack.ports import free_port, port_open
from pipeline.settings import REPO_ROOT

MOSQ = REPO_ROOT / "deploy" / "mosquitto"
PASSWORDS = {"MQTT_BRIDGE_PASSWORD": "b-secret", "MQTT_EDGE_USERS": "node-1:n1-secret node-2:n2:secret"}


def _mosquitto() -> str:
    for exe in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if exe and Path(exe).exists():
            return exe
    pytest.skip("mosquitto not installed (apt-get install mosquitto)")


@pytest.fixture
def repo_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    exe = _mosquitto()
    auth, data = tmp_path / "auth", tmp_path / "data"
    data.mkdir()
    out = subprocess.run(
        ["sh", str(MOSQ / "make-passwd.sh"), str(auth / "passwd")],
        env={"PATH": os.environ["PATH"], **PASSWORDS}, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    port = free_port()
    conf = (MOSQ / "mosquitto.conf").read_text()
    conf = conf.replace("listener 1883\n", f"listener {port} 127.0.0.1\n")
    conf = conf.replace("/mosquitto/auth/", f"{auth}/").replace("/mosquitto/config/acl", str(MOSQ / "acl"))
    conf = conf.replace("/mosquitto/data/", f"{data}/")
    assert not [ln for ln in conf.splitlines() if " /mosquitto/" in ln and not ln.startswith("#")]
    conf += f"user {getpass.getuser()}\n"  # as root Mosquitto would switch to user mosquitto
    (tmp_path / "mosquitto.conf").write_text(conf)
    log = (tmp_path / "mosquitto.log").open("wb")
    proc = subprocess.Popen([exe, "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            if port_open("127.0.0.1", port) or proc.poll() is not None:
                break
            threading.Event().wait(0.05)
        assert proc.poll() is None, (tmp_path / "mosquitto.log").read_text()
        yield port, auth
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _client(port: int, user: str, password: str) -> tuple[mqtt.Client, Any]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    result: dict[str, Any] = {"connack": threading.Event(), "messages": [], "pubacks": {}}

    def on_connect(
        cl: mqtt.Client, ud: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, props: Properties | None
    ) -> None:
        result["rc"] = rc
        result["connack"].set()

    c.on_connect = on_connect
    c.on_message = lambda cl, ud, msg: result["messages"].append(msg.topic)
    c.on_publish = lambda cl, ud, mid, rc, props: result["pubacks"].__setitem__(mid, rc)
    c.connect("127.0.0.1", port, clean_start=True)
    c.loop_start()
    assert result["connack"].wait(5)
    return c, result


@pytest.mark.integration
def test_password_file_and_per_camera_acls(repo_broker: tuple[int, Path]) -> None:
    port, _ = repo_broker
    bad, res = _client(port, "node-1", "wrong")
    assert res["rc"].is_failure
    bad.loop_stop()
    bad.disconnect()

    bridge, seen = _client(port, "bridge", PASSWORDS["MQTT_BRIDGE_PASSWORD"])
    node, pub = _client(port, "node-1", "n1-secret")
    try:
        assert not seen["rc"].is_failure and not pub["rc"].is_failure
        sub = threading.Event()

        def on_subscribe(cl: mqtt.Client, ud: Any, mid: int, codes: list[ReasonCode], props: Properties) -> None:
            seen["granted"] = codes
            sub.set()

        bridge.on_subscribe = on_subscribe
        bridge.subscribe("$share/bridges/vision/+/+/events", qos=1)  # what the bridge subscribes
        assert sub.wait(5)
        assert not seen["granted"][0].is_failure, seen["granted"]
        own = node.publish("vision/site-a/cam-1/events", b"{}", qos=1)
        other = node.publish("vision/site-b/cam-9/events", b"{}", qos=1)  # not node-1's camera
        own.wait_for_publish(5)
        other.wait_for_publish(5)
        assert not pub["pubacks"][own.mid].is_failure
        assert pub["pubacks"][other.mid].value == 135  # MQTT 5: not authorised
        for _ in range(100):
            if seen["messages"]:
                break
            threading.Event().wait(0.05)
        assert seen["messages"] == ["vision/site-a/cam-1/events"]
    finally:
        for c in (bridge, node):
            c.loop_stop()
            c.disconnect()


@pytest.mark.integration
def test_compose_health_check_command_passes(repo_broker: tuple[int, Path], compose: dict[str, Any]) -> None:
    port, auth = repo_broker
    if shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto_sub not installed (apt-get install mosquitto-clients)")
    kind, command = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = command.replace("$$", "$").replace("/mosquitto/auth/", f"{auth}/").replace("-p 1883", f"-p {port}")
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=15, check=False)
    assert out.returncode == 0, out.stderr


@pytest.mark.integration
def test_make_passwd_refuses_a_missing_bridge_password(tmp_path: Path) -> None:
    out = subprocess.run(
        ["sh", str(MOSQ / "make-passwd.sh"), str(tmp_path / "passwd")],
        env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode != 0 and "MQTT_BRIDGE_PASSWORD" in out.stderr
    assert not (tmp_path / "passwd").exists()


@pytest.mark.integration
def test_make_passwd_run_again_keeps_the_healthcheck_password(tmp_path: Path) -> None:
    """`docker compose up` (scaling, say) starts the one-shot job again while the broker keeps the
    users it loaded: a new health-check password would make the broker refuse its own health check
    (found by tests/compose)."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not installed (apt-get install mosquitto)")
    env = {"PATH": os.environ["PATH"], "MQTT_BRIDGE_PASSWORD": "b"}

    def make() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(MOSQ / "make-passwd.sh"), str(tmp_path / "passwd")],
            env=env, capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip

    make()
    first = (tmp_path / "healthcheck.pw").read_text()
    make()
    assert len(first) == 48 and (tmp_path / "healthcheck.pw").read_text() == first
    assert "healthcheck:" in (tmp_path / "passwd").read_text()


@pytest.mark.unit
def test_acl_covers_the_example_edge_node() -> None:
    from pipeline.settings import load_settings

    settings = load_settings(REPO_ROOT / "deploy" / "edge.example.yaml")
    acl = (MOSQ / "acl").read_text()
    prefix, site = settings.mqtt.topic_prefix, settings.edge.site
    assert f"user {settings.mqtt.username}" in acl and settings.mqtt.username == settings.edge.node_id
    for cam in settings.edge.cameras:
        for access, kind in (("write", "events"), ("write", "status"), ("read", "config"), ("read", "acks")):
            assert f"topic {access} {prefix}/{site}/{cam.id}/{kind}" in acl
