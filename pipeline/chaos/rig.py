"""What a scenario runs on: private brokers, the bridge and cloud worker as child processes
(the commands a deployment runs), an alert subscriber, and readers of what arrived.

:class:`ChaosEnv` owns everything it starts (an :class:`~contextlib.ExitStack`) and builds
settings wired to those brokers with a fresh topic prefix and Kafka topics per call, so scenarios
never see each other's data. ``tests/faults`` builds one per test on top of the session brokers;
``pipeline chaos`` builds one on brokers of its own.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from pipeline.alerts_subscriber import AlertSubscriber
from pipeline.chaos.scripted_edge import edge_settings_for
from pipeline.chaos.stream import RULE, ScriptedStream
from pipeline.local_stack.child_process import ChildProcess
from pipeline.local_stack.kafka_topics import ensure_topics
from pipeline.local_stack.mosquitto import MosquittoProcess
from pipeline.local_stack.pipeline_service import PipelineService
from pipeline.local_stack.ports import free_port
from pipeline.local_stack.tansu import TansuProcess
from pipeline.operators.schema import Rejected, decode_event
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class KafkaEvents:
    """What the events topic holds: per event id, how often, and per camera the first-seen order."""

    counts: Counter[str] = field(default_factory=Counter)
    order: dict[str, list[int]] = field(default_factory=dict)  # cam -> seqs in offset order
    undecodable: int = 0

    @property
    def duplicates(self) -> int:
        return sum(c - 1 for c in self.counts.values())

    def order_violations(self) -> int:
        """Per camera, first-seen seqs that come after a larger seq (out of order in Kafka)."""
        bad = 0
        for seqs in self.order.values():
            top = -1
            for s in dict.fromkeys(seqs):
                if s < top:
                    bad += 1
                top = max(top, s)
        return bad


def topic_records(settings: Settings, topic: str, idle_polls: int = 3, timeout_s: float = 120.0) -> Iterator[Any]:
    """Every record of ``topic`` from the beginning (per partition in offset order), read until
    ``idle_polls`` empty polls in a row (Tansu answers ListOffsets(latest) wrongly, so end offsets
    cannot be trusted) or ``timeout_s``."""
    consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False, group_id=None)
    try:
        ids = consumer.partitions_for_topic(topic) or set(range(settings.kafka.partitions))
        parts = [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        idle, deadline = 0, time.monotonic() + timeout_s
        while idle < idle_polls and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                yield from sorted(records, key=lambda r: r.offset)
    finally:
        consumer.close()


def read_events(settings: Settings, idle_polls: int = 3, timeout_s: float = 120.0) -> KafkaEvents:
    """Every event of the events topic from the beginning: copies per id, seq order per camera."""
    out = KafkaEvents()
    for r in topic_records(settings, settings.kafka.events_topic, idle_polls, timeout_s):
        ev = decode_event(r.value)
        if isinstance(ev, Rejected):
            out.undecodable += 1
            continue
        out.counts[ev.id] += 1
        out.order.setdefault(ev.cam, []).append(ev.seq)
    return out


class ChaosEnv:
    """Starts brokers and services for scenarios and stops them all on :meth:`close`."""

    def __init__(
        self,
        work_dir: Path,
        *,
        kafka: TansuProcess | None = None,
        model_server_address: str | None = None,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.stack = ExitStack()
        self._kafka = kafka
        self.model_server_address = model_server_address
        self._services: list[PipelineService] = []

    def close(self) -> None:
        # Our own commands first, all at once: a Faust worker takes ~7 s to leave its group, a
        # bridge up to ~3 s to flush; one after the other that was 8-23 s per scenario's teardown
        # (3-5 s now). The brokers they talk to stay up until the stack stops them, in reverse order.
        for svc in self._services:
            svc.terminate()
        self.stack.close()

    def __enter__(self) -> ChaosEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dir(self, what: str) -> Path:
        d = self.work_dir / f"{what}-{uuid.uuid4().hex[:6]}"
        d.mkdir(parents=True)
        return d

    # ------------------------------------------------------------------ brokers

    def mqtt_broker(self, **kw: Any) -> MosquittoProcess:
        """A private, started Mosquitto (kwargs go to :class:`MosquittoProcess`)."""
        return self.stack.enter_context(MosquittoProcess(self._dir("mosquitto"), **kw))

    def kafka_broker(self, *, private: bool = False) -> TansuProcess:
        """The shared Tansu (started on first use) or a private one a scenario may restart."""
        if private:
            return self.stack.enter_context(TansuProcess(self._dir("tansu")))
        if self._kafka is None:
            self._kafka = self.stack.enter_context(TansuProcess(self._dir("tansu")))
        return self._kafka

    # ------------------------------------------------------------------ settings

    def settings(
        self, stream: ScriptedStream, mqtt: MosquittoProcess, kafka: TansuProcess, **sections: dict[str, Any]
    ) -> Settings:
        """Settings for one scenario: fresh prefix/topics/ids, escalation never + the presence rule."""
        prefix = f"c{uuid.uuid4().hex[:8]}"
        run = self._dir(prefix)
        data: dict[str, Any] = {
            "mqtt": {"host": mqtt.host, "port": mqtt.port, "topic_prefix": prefix, "keepalive_s": 5},
            "kafka": {
                "bootstrap_servers": kafka.bootstrap,
                "fast_group_join": True,
                "events_topic": f"{prefix}.events",
                "alerts_topic": f"{prefix}.alerts",
                "config_topic": f"{prefix}.config",
                "dead_letter_topic": f"{prefix}.deadletter",
            },
            "edge": {"node_id": f"{prefix}-node", "ack_timeout_s": 10.0, "final_ack_wait_s": 30.0},
            "bridge": {"client_id": f"{prefix}-bridge", "downlink_group": f"{prefix}-downlink", "ack_interval_ms": 100},
            "cloud": {
                "app_id": f"{prefix}-cloud",
                "data_dir": str(run / "faust"),
                "escalation": "never",
                "rules": [RULE.model_dump()],
                "web_enabled": False,
                "web_port": free_port(),
            },
            "local": {"run_dir": str(run)},
        }
        if self.model_server_address:
            data["model_server"] = {"address": self.model_server_address}
        for name, update in sections.items():
            data[name] = {**data.get(name, {}), **update}
        settings = edge_settings_for(Settings(**data), stream, run / "edge-outbox.sqlite")
        ensure_topics(settings.kafka)
        return settings

    def write_config(self, settings: Settings, name: str) -> Path:
        path = Path(settings.local.run_dir) / f"{name}.yaml"
        path.write_text(settings.to_yaml())
        return path

    # ------------------------------------------------------------------ services

    def service(self, settings: Settings, name: str, args: list[str], *,
                start: bool = True, start_timeout_s: float = 180.0) -> PipelineService:  # fmt: skip
        """``pipeline <args>`` as a child process (stopped on close)."""
        config = self.write_config(settings, name)
        svc = PipelineService(name, Path(settings.local.run_dir), config, args, start_timeout_s=start_timeout_s)
        self._services.append(svc)
        self.stack.callback(svc.stop)
        if start:
            svc.start()
        return svc

    def bridge(self, settings: Settings, name: str = "bridge", **bridge: Any) -> PipelineService:
        if bridge:
            settings = settings.model_copy(update={"bridge": settings.bridge.model_copy(update=bridge)})
        return self.service(settings, name, ["bridge"])

    def cloud(self, settings: Settings, name: str = "cloud", *, start: bool = True, **cloud: Any) -> PipelineService:
        if cloud:
            settings = settings.model_copy(update={"cloud": settings.cloud.model_copy(update=cloud)})
        return self.service(settings, name, ["cloud"], start=start)

    def scripted_edge_child(self, settings: Settings, stream_args: list[str], name: str = "edge", *,
                            wrap: Sequence[str] = ()) -> PipelineService:  # fmt: skip
        """The scripted edge (:mod:`pipeline.chaos.scripted_edge`) as a child process, not started;
        ``wrap`` goes before its command line (e.g. to run it in a network namespace)."""
        config = self.write_config(settings, name)
        svc = _ModuleService(name, Path(settings.local.run_dir), config, stream_args, wrap)
        self._services.append(svc)
        self.stack.callback(svc.stop)
        return svc

    def subscriber(self, settings: Settings) -> AlertSubscriber:
        sub = AlertSubscriber(settings, f"{settings.mqtt.topic_prefix}-alerts")
        return self.stack.enter_context(sub)


class _ModuleService(PipelineService):
    """``python -m pipeline.chaos.scripted_edge --config FILE ...``."""

    def __init__(self, name: str, data_dir: Path, config: Path, args: list[str], wrap: Sequence[str] = ()) -> None:
        super().__init__(name, data_dir, config, args, start_timeout_s=60.0)
        self.wrap = list(wrap)

    def command(self) -> list[str]:
        return [*self.wrap, sys.executable, "-m", "pipeline.chaos.scripted_edge", "--config", str(self.config_file),
                *self.args]  # fmt: skip


def start_all(*services: ChildProcess) -> None:
    """Start child processes in parallel (a Faust worker takes a while on a small machine)."""
    errors: list[BaseException] = []

    def start(s: ChildProcess) -> None:
        try:
            s.start()
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
