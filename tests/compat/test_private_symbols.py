"""The library internals fenced in ``pipeline/compat`` still exist, the version checks refuse or
fall back as documented, and no other module touches a fenced private name.

If a test here fails after a dependency bump: re-read the fenced module against the new
library's source, re-run tests/bridge and tests/cloud_stage, then add the version to its Fence.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaProducer
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.compat import faust_app, kafka_python, paho_uplink
from pipeline.compat.versions import Fence, UnverifiedLibrary

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
FENCES = [faust_app.FAUST, faust_app.AIOKAFKA, paho_uplink.PAHO, kafka_python.KAFKA_PYTHON, kafka_python.AIOKAFKA_CRC]


@pytest.mark.parametrize("fence", FENCES, ids=lambda f: f.distribution)
def test_installed_versions_are_the_verified_ones(fence: Fence) -> None:
    assert fence.installed() in fence.verified, f"{fence.distribution} {fence.installed()}: re-verify pipeline/compat"
    assert fence.ok()


@pytest.mark.parametrize(
    ("owner", "name"), [*faust_app.PRIVATE_SYMBOLS, *paho_uplink.PRIVATE_SYMBOLS], ids=lambda x: str(x)
)
def test_private_class_and_module_symbols_exist(owner: object, name: str) -> None:
    assert hasattr(owner, name), f"{owner!r} has no {name} any more"


@pytest.mark.parametrize(("module", "name"), kafka_python.PRIVATE_SYMBOLS)
def test_private_kafka_symbols_exist(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name)


def test_private_instance_attributes_exist() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, manual_ack=True)
    missing = [a for a in paho_uplink.PRIVATE_INSTANCE_ATTRIBUTES if not hasattr(client, a)]
    assert not missing, f"paho Client lost {missing}"
    assert paho_uplink.queued_publishes(client) == 0
    # A KafkaProducer opens sockets as it is built: read its constructor instead.
    init = inspect.getsource(KafkaProducer.__init__)
    assert all(f"self.{a} =" in init for a in kafka_python.PRIVATE_INSTANCE_ATTRIBUTES)
    assert kafka_python.producer_cluster(type("P", (), {"_metadata": "cluster"})()) == "cluster"


def test_an_unverified_version_is_refused_or_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    refuse = Fence("paho-mqtt", frozenset({"0.0.1"}), "refuse", "test", "never")
    with pytest.raises(UnverifiedLibrary, match=r"paho-mqtt 2\.2\.0 is not a version \['0\.0\.1'\]"):
        refuse.ok()
    fallback = Fence("paho-mqtt", frozenset({"0.0.1"}), "fallback", "test", "never")
    with caplog.at_level(logging.WARNING):
        assert fallback.ok() is False
    assert "using the public path instead" in caplog.text


def test_unverified_paho_gives_the_plain_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paho_uplink, "PAHO", Fence("paho-mqtt", frozenset({"0.0.1"}), "fallback", "t", "t"))
    assert paho_uplink.uplink_client_class() is mqtt.Client
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5)
    assert paho_uplink.queued_publishes(client) is None


def test_unverified_faust_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_app, "FAUST", Fence("faust-streaming", frozenset({"0.0.1"}), "refuse", "t", "t"))
    with pytest.raises(UnverifiedLibrary, match="faust-streaming"):
        faust_app.PipelineFaustApp("t", broker="kafka://127.0.0.1:1", store="memory://")


def test_no_module_outside_compat_touches_a_fenced_private_name() -> None:
    names = {n for _, n in faust_app.PRIVATE_SYMBOLS} | {n for _, n in paho_uplink.PRIVATE_SYMBOLS}
    names |= set(paho_uplink.PRIVATE_INSTANCE_ATTRIBUTES) | {n for _, n in kafka_python.PRIVATE_SYMBOLS}
    names |= set(kafka_python.PRIVATE_INSTANCE_ATTRIBUTES) | {"_acked", "_committed_offset", "_fetch_max_wait_ms"}
    private = [n for n in names if n.startswith("_")]
    # `obj._name` where obj is not self/cls/super(): a library object's private attribute.
    pattern = re.compile(r"(?<![\w.])(?!self\.|cls\.|super\(\)\.)[A-Za-z_][\w.()]*\.(" + "|".join(private) + r")\b")
    swaps = re.compile(r"\.__class__\s*=")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "compat":
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) or swaps.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{no}: {line.strip()}")
    assert not offenders, "private library internals outside pipeline/compat:\n" + "\n".join(offenders)
