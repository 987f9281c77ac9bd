"""Shared fixtures: real brokers and the model server, started once per test session.

- ``mqtt_broker``: :class:`MosquittoProcess` (anonymous allowed, persistence on) - ``.host``,
  ``.port``, ``.data_dir``, ``.log_path``, ``stop()/kill()/restart()``.
- ``kafka_broker``: :class:`TansuProcess` - ``.bootstrap`` ("127.0.0.1:PORT"), ``.host``,
  ``.port``. Memory-only storage: a restart loses every topic and record.
- ``model_server``: :class:`ModelServerProcess` serving the repo's ``models/`` directory -
  ``.address`` ("127.0.0.1:PORT"), ``.model_base_path``.
- ``make_settings(**section_updates)``: a :class:`Settings` wired to those brokers with a
  unique MQTT topic prefix and unique Kafka topics (created) per call.
- ``make_mqtt_broker(**kw)`` / ``make_kafka_broker(**kw)``: private brokers for one test (fault
  tests that kill or restart a broker must use these, not the session-wide ones).

Session brokers are shared by every test: never kill them.
"""

from __future__ import annotations

import os

# TensorFlow (model server children, model tests) logs CUDA probing noise on a CPU machine.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline.local_stack.kafka_topics import ensure_topics
from pipeline.local_stack.model_server import ModelServerProcess
from pipeline.local_stack.mosquitto import MosquittoProcess
from pipeline.local_stack.tansu import TansuProcess
from pipeline.settings import REPO_ROOT, Settings

MakeSettings = Callable[..., Settings]


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoProcess]:
    with MosquittoProcess(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuProcess]:
    with TansuProcess(tmp_path_factory.mktemp("tansu")) as broker:
        # The default topic names, for tests that use Settings() defaults with this bootstrap.
        ensure_topics(Settings().kafka.model_copy(update={"bootstrap_servers": broker.bootstrap}))
        yield broker


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServerProcess]:
    with ModelServerProcess(tmp_path_factory.mktemp("model-server"), REPO_ROOT / "models") as server:
        yield server


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_settings(
    request: pytest.FixtureRequest,
    mqtt_broker: MosquittoProcess,
    kafka_broker: TansuProcess,
    tmp_path: Path,
) -> MakeSettings:
    """Factory: ``make_settings(edge={"site": "s1"}, cloud=CloudSettings(...))``.

    Each keyword is a settings section: a dict is merged over the wired section, a section
    object contributes the fields it was given explicitly. Every call gets a fresh prefix
    ``t<uuid8>``: MQTT ``topic_prefix``, Kafka topics ``t<uuid8>.events|alerts|config|deadletter``
    (created), and ids (``cloud.app_id``, ``bridge.client_id``/``downlink_group``, ``history.group``,
    ``edge.node_id``) so tests never see each other's data or consumer groups.
    ``model_server.address`` points at the session model server when the test also requests the
    ``model_server`` fixture.
    """

    def make(**section_updates: Any) -> Settings:
        prefix = f"t{uuid.uuid4().hex[:8]}"
        wired: dict[str, Any] = {
            "mqtt": {"host": mqtt_broker.host, "port": mqtt_broker.port, "topic_prefix": prefix},
            "kafka": {
                "bootstrap_servers": kafka_broker.bootstrap,
                "fast_group_join": True,
                "events_topic": f"{prefix}.events",
                "alerts_topic": f"{prefix}.alerts",
                "config_topic": f"{prefix}.config",
                "dead_letter_topic": f"{prefix}.deadletter",
            },
            "edge": {"node_id": f"{prefix}-node", "outbox_path": str(tmp_path / f"{prefix}-outbox.sqlite")},
            # The downlink's and the history store's consumer groups are fixed names by default
            # ("bridges-downlink", "history"): on the session broker a bridge SIGKILLed by one
            # test stayed a member of the group the next test joined, and Tansu kept that group
            # rebalancing (SyncGroup "coordinator rebalance" every 8 s, CI stop 20).
            "bridge": {"client_id": f"{prefix}-bridge", "downlink_group": f"{prefix}-bridges-downlink"},
            "history": {"group": f"{prefix}-history"},
            "cloud": {"app_id": f"{prefix}-cloud", "data_dir": str(tmp_path / f"{prefix}-faust")},
            "local": {"run_dir": str(tmp_path / f"{prefix}-run")},
        }
        if "model_server" in request.fixturenames:
            server: ModelServerProcess = request.getfixturevalue("model_server")
            wired["model_server"] = {
                "address": server.address,
                "model_base_path": str(server.model_base_path),
            }
        for section, update in section_updates.items():
            if isinstance(update, BaseModel):
                update = update.model_dump(exclude_unset=True)
            if not isinstance(update, dict):
                raise TypeError(f"make_settings({section}=...) takes a dict or a settings section")
            wired = _merge(wired, {section: update})
        settings = Settings(**wired)
        ensure_topics(settings.kafka)
        return settings

    return make


@pytest.fixture
def make_mqtt_broker(tmp_path: Path) -> Iterator[Callable[..., MosquittoProcess]]:
    """Factory for a private, started Mosquitto (kwargs go to MosquittoProcess); stopped after the test."""
    with ExitStack() as stack:

        def make(**kw: Any) -> MosquittoProcess:
            data_dir = kw.pop("data_dir", None) or tmp_path / f"mosquitto-{uuid.uuid4().hex[:6]}"
            return stack.enter_context(MosquittoProcess(data_dir, **kw))

        yield make


@pytest.fixture
def make_kafka_broker(tmp_path: Path) -> Iterator[Callable[..., TansuProcess]]:
    """Factory for a private, started Tansu (kwargs go to TansuProcess); stopped after the test."""
    with ExitStack() as stack:

        def make(**kw: Any) -> TansuProcess:
            data_dir = kw.pop("data_dir", None) or tmp_path / f"tansu-{uuid.uuid4().hex[:6]}"
            return stack.enter_context(TansuProcess(data_dir, **kw))

        yield make
