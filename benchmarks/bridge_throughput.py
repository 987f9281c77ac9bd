"""Bridge throughput (events/s into Kafka) and added latency, vs a naive loop in the same run.

Both run as child processes against the same Mosquitto and Tansu: ``pipeline bridge`` (the
command a deployment runs) and :mod:`benchmarks.naive_bridge` (one synchronous
``send().get()`` per MQTT message, then the ack). Each gets its own topic prefix and topics.

- Throughput: feeder processes (:mod:`benchmarks.event_feeder`, QoS 1, pre-generated valid
  events, several cameras) publish N events as fast as they can. Once the events topic stops
  growing, its records are read back: events/s = records of this run / (latest record
  timestamp - start). The record timestamp is the producer's CreateTime, i.e. when the bridge
  handed the record to its Kafka producer (the same clock for both bridges).
  The feeders' own publish rate is reported too: if it is not far above the bridge's figure,
  the publishers (on the same 2 cores) were the limit, not the bridge.
- Scale-out: two ``pipeline bridge`` processes on one MQTT 5 shared subscription
  (``bridge.shared_group``, own client ids), measured the same way in the same run, against
  the single bridge above (which already subscribes through the default shared group
  ``bridges``): the slope of docs/scaling.md. On this 2-core
  machine the feeders, Mosquitto and Tansu share the cores with the bridges, so the figure is a
  floor for what a second core per bridge gives.
- Added latency: events published at a fixed, modest rate, stamped with their publish time;
  a Kafka consumer (``fetch_max_wait_ms=5``) in this process takes each record; latency =
  consume time - publish time. The consumer's own delay is in both figures alike.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from benchmarks.event_feeder import FeedPlan, start_feeders
from benchmarks.harness import BenchResult, Context, median, quantile
from benchmarks.table import Row, at_least, ratio_at_least
from pipeline.local_stack.pipeline_service import PipelineService
from pipeline.operators.schema import Rejected, decode_event
from pipeline.settings import Settings

GROUP = "bridge"
# what `pipeline bridge` logs once subscribed and assigned (pipeline/bridge/service.py)
CAMS = 8
FEEDERS = 2


class NaiveBridge(PipelineService):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.naive_bridge", "--config", str(self.config_file)]


def _service(kind: str, settings: Settings) -> PipelineService:
    run = Path(settings.local.run_dir)
    cfg = run / f"{kind}.yaml"
    cfg.write_text(settings.to_yaml())
    if kind == "naive":
        return NaiveBridge("naive-bridge", run, cfg, [], r"naive bridge ready", start_timeout_s=60)
    return PipelineService("bridge", run, cfg, ["bridge"], start_timeout_s=60)


class Offsets:
    """Sum of the end offsets of a topic's partitions (only to see when the topic stops growing:
    the local Tansu reports a high watermark that can trail the last record of a batch)."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = KafkaConsumer(**settings.kafka.client_kwargs())
        topic = settings.kafka.events_topic
        self.tps = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]  # created so

    def total(self) -> int:
        return int(sum(self.consumer.end_offsets(self.tps).values()))

    def wait_quiet(self, quiet_s: float, timeout_s: float) -> None:
        last, since, deadline = -1, time.monotonic(), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = self.total()
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.05)

    def close(self) -> None:
        self.consumer.close()


def landed(settings: Settings, tag: str, expected: int, timeout_s: float = 30.0) -> tuple[int, int | None]:
    """Records of this run (cameras named ``tag...``) in the events topic, and the latest record
    timestamp (CreateTime: when the bridge handed it to its producer), read after the run."""
    k = settings.kafka
    consumer = KafkaConsumer(**k.client_kwargs(), enable_auto_commit=False, max_poll_records=5000)
    n, last_ts = 0, None
    prefix = tag.encode()
    try:
        tps = [TopicPartition(k.events_topic, p) for p in range(k.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        idle_until = time.monotonic() + timeout_s
        while n < expected and time.monotonic() < idle_until:
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    if r.key is not None and r.key.startswith(prefix):
                        n += 1
                        last_ts = r.timestamp if last_ts is None else max(last_ts, r.timestamp)
            if batch:
                idle_until = time.monotonic() + 5.0
    finally:
        consumer.close()
    return n, last_ts


_runs = itertools.count()


def _plans(settings: Settings, count: int, rate: float | None, ts_now: bool, tag: str) -> list[FeedPlan]:
    m = settings.mqtt
    per = count // FEEDERS
    cams_per = CAMS // FEEDERS
    return [
        FeedPlan(
            m.host,
            m.port,
            m.topic_prefix,
            "site-b",
            tuple(f"{tag}{f}-cam{c}" for c in range(cams_per)),
            per,
            None if rate is None else rate / FEEDERS,
            ts_now,
        )
        for f in range(FEEDERS)
    ]


def throughput(settings: Settings, count: int, timeout_s: float) -> dict[str, Any]:
    tag = f"r{next(_runs)}x"
    offsets = Offsets(settings)
    try:
        feeders = start_feeders(_plans(settings, count, None, False, tag))
        want = FEEDERS * (count // FEEDERS)
        t0_wall = time.time() * 1000
        t0 = feeders.go_now()
        results = feeders.join(timeout_s)
        offsets.wait_quiet(1.0, timeout_s)
    finally:
        offsets.close()
    got, last_ts = landed(settings, tag, want)
    elapsed = (last_ts - t0_wall) / 1000 if last_ts is not None else time.monotonic() - t0
    publish_s = max(r[1] for r in results)
    return {
        "events": got,
        "expected": want,
        "elapsed_s": elapsed,
        "events_per_s": got / elapsed if elapsed > 0 else float("nan"),
        "publish_per_s": want / publish_s if publish_s > 0 else float("nan"),
    }


def latency(settings: Settings, rate: float, seconds: float) -> list[float]:
    k = settings.kafka
    consumer = KafkaConsumer(**k.client_kwargs(), fetch_max_wait_ms=5, enable_auto_commit=False)
    try:
        tps = [TopicPartition(k.events_topic, p) for p in range(k.partitions)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)
        count = int(rate * seconds)
        tag = f"lat{next(_runs)}x"
        feeders = start_feeders(_plans(settings, count, rate, True, tag))
        want = FEEDERS * (count // FEEDERS)
        feeders.go_now()
        lat: list[float] = []
        deadline = time.monotonic() + seconds + 30
        while len(lat) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=50).values():
                now = time.time() * 1000
                for r in records:
                    if r.key is None or not r.key.startswith(tag.encode()):
                        continue  # a record of an earlier run (see Offsets)
                    ev = decode_event(r.value)
                    if not isinstance(ev, Rejected):
                        lat.append(now - ev.ts)
        feeders.join()
    finally:
        consumer.close()
    return lat


def _measure_shared(ctx: Context, processes: int, count: int) -> dict[str, Any]:
    """``processes`` bridges on one shared subscription: events/s of them together."""
    settings = ctx.fresh_settings(f"bs{processes}", bridge={"shared_group": "bench"})
    run = Path(settings.local.run_dir)
    services = []
    for i in range(processes):
        s = settings.model_copy(update={"bridge": settings.bridge.model_copy(update={"client_id": f"bridge-{i + 1}"})})
        cfg = run / f"bridge-{i + 1}.yaml"
        (run / f"b{i + 1}").mkdir(parents=True, exist_ok=True)
        cfg.write_text(s.to_yaml())
        services.append(PipelineService(f"bridge-{i + 1}", run / f"b{i + 1}", cfg, ["bridge"], start_timeout_s=60))
    ctx.log(f"bridge: starting {processes} bridge process(es) on one shared subscription")
    with contextlib.ExitStack() as stack:
        for svc in services:
            stack.enter_context(svc)
        warm = throughput(settings, FEEDERS * 4, 60)
        if warm["events"] < warm["expected"]:
            raise RuntimeError(f"{processes} shared bridges: warm-up events did not reach Kafka")
        runs = []
        for i in range(ctx.repeats):
            ctx.log(f"bridge: {processes} shared, {count} events, run {i + 1}/{ctx.repeats}")
            r = throughput(settings, count, 120)
            ctx.log(f"   {r['events']}/{r['expected']} in Kafka, {r['events_per_s']:,.0f} events/s")
            runs.append(r)
    return {"runs": runs}


def _measure(ctx: Context, kind: str, count: int) -> dict[str, Any]:
    settings = ctx.fresh_settings(f"br{kind[:2]}")
    svc = _service(kind, settings)
    ctx.log(f"bridge: starting {kind}")
    with svc:
        # one event end to end first: connections, metadata and subscriptions are warm
        warm = throughput(settings, FEEDERS, 60)
        if warm["events"] < warm["expected"]:
            raise RuntimeError(f"{kind}: warm-up events did not reach Kafka; see {svc.log_path}")
        runs = []
        for i in range(ctx.repeats):
            ctx.log(f"bridge: {kind}, {count} events as fast as the feeders go, run {i + 1}/{ctx.repeats}")
            r = throughput(settings, count, 120)
            ctx.log(
                f"   {r['events']}/{r['expected']} in Kafka, {r['events_per_s']:,.0f} events/s"
                f" (feeders published {r['publish_per_s']:,.0f}/s)"
            )
            runs.append(r)
        rate, secs = 100.0, (3.0 if ctx.quick else 10.0)
        ctx.log(f"bridge: {kind}, latency at {rate:.0f} events/s for {secs:.0f} s")
        lat = latency(settings, rate, secs)
        ctx.log(f"   p50 {quantile(lat, 0.5) or 0:.1f} ms p99 {quantile(lat, 0.99) or 0:.1f} ms ({len(lat)} records)")
    return {"runs": runs, "latency_ms": lat}


def run(ctx: Context) -> BenchResult:
    bridge = _measure(ctx, "bridge", 10_000 if ctx.quick else 100_000)
    naive = _measure(ctx, "naive", 1_000 if ctx.quick else 3_000)
    two = _measure_shared(ctx, 2, 10_000 if ctx.quick else 100_000)

    def eps(d: dict[str, Any]) -> float | None:
        return median(r["events_per_s"] for r in d["runs"])

    b_eps, n_eps = eps(bridge), eps(naive)
    feeders = median(r["publish_per_s"] for r in bridge["runs"])
    bl, nl = bridge["latency_ms"], naive["latency_ms"]
    rows = [
        Row.make(
            "bridge events/s into Kafka",
            b_eps,
            "ev/s",
            baseline=n_eps,
            baseline_label="naive loop",
            target=ratio_at_least(10),
            group=GROUP,
            note=f"{FEEDERS} feeder processes published {feeders or 0:,.0f} events/s (QoS 1)",
        ),
        Row.make("bridge events/s (absolute)", b_eps, "ev/s", target=at_least(20_000), group=GROUP),
        Row.make(
            "2 bridge processes on one shared subscription, events/s",
            eps(two),
            "ev/s",
            baseline=b_eps,
            baseline_label="1 process (also on the shared subscription)",
            group=GROUP,
            note="scale-out slope for docs/scaling.md; feeders, Mosquitto and Tansu share the same 2 cores",
        ),
        Row.make(
            "bridge added latency p50",
            quantile(bl, 0.5),
            "ms",
            baseline=quantile(nl, 0.5),
            baseline_label="naive loop",
            group=GROUP,
            note="MQTT publish -> Kafka consumer, 100 events/s",
        ),
        Row.make(
            "bridge added latency p99",
            quantile(bl, 0.99),
            "ms",
            baseline=quantile(nl, 0.99),
            baseline_label="naive loop",
            group=GROUP,
        ),
    ]
    series = {
        "latency_ms": {"bridge": bl, "naive loop": nl},
        "runs": {"bridge": bridge["runs"], "naive": naive["runs"], "two_bridges": two["runs"]},
    }
    return BenchResult(rows, series)
