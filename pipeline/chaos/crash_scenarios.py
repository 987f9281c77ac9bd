"""Scenarios that kill or stop a process mid-stream: Mosquitto, the edge, the bridge (alone and
one of a pair), the Kafka broker, a Faust worker, the model server; and the link cut by stopping
the edge's broker. Each is a :data:`pipeline.chaos.scenarios.Scenario`.

Separate from :mod:`pipeline.chaos.link_scenarios` (faults on the network path, which need a
proxy or a network namespace of their own); the steps both use are in
:mod:`pipeline.chaos.scenario_steps`.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from typing import Any

from pipeline.chaos.rig import ChaosEnv, start_all
from pipeline.chaos.scenario_steps import (
    ALERT_TIMEOUT_S,
    ScenarioResult,
    collect_result,
    rate_for,
    start_cloud_side,
    wait_drained,
)
from pipeline.chaos.scripted_edge import ScriptedEdge, child_args, outbox_progress
from pipeline.chaos.stream import ScriptedStream
from pipeline.local_stack.kafka_topics import ensure_topics
from pipeline.local_stack.model_server import ModelServerProcess
from pipeline.settings import REPO_ROOT
from pipeline.testing import wait_until

# --------------------------------------------------------------------------- (1) MQTT broker crash


def mosquitto_crash(env: ChaosEnv, n: int) -> ScenarioResult:
    """Mosquitto SIGKILLed mid-stream and restarted on the same port and data dir."""
    stream = ScriptedStream(n, cams=("cam-1", "cam-2"))
    mqtt = env.mqtt_broker(autosave_interval_s=1)
    settings = env.settings(stream, mqtt, env.kafka_broker())
    _, _, sub = start_cloud_side(env, settings)
    edge = ScriptedEdge(settings, stream, rate_per_s=rate_for(n, 12)).start()
    try:
        edge.wait(f"emitted:{n // 3}", 60)
        mqtt.kill()
        time.sleep(2.0)
        emitted_while_down = edge.emitted()
        mqtt.start()
        fixed = time.monotonic()
        recovery = wait_drained(edge, fixed, "mosquitto crash")
        notes = [f"killed at {emitted_while_down}/{n} emitted",
                 f"edge reconnects {edge.metrics.counter('mqtt_reconnects_total'):.0f}"]  # fmt: skip
    finally:
        edge.close()
    return collect_result("mosquitto SIGKILL+restart", settings, stream, sub, recovery, notes)


# --------------------------------------------------------------------------- (2) link cut, edge crash


def link_down(env: ChaosEnv, n: int) -> ScenarioResult:
    """The edge's broker stopped for a while (the link is down), then back: the outbox drains in order."""
    stream = ScriptedStream(n, cams=("cam-1",))
    mqtt = env.mqtt_broker()
    settings = env.settings(stream, mqtt, env.kafka_broker())
    _, _, sub = start_cloud_side(env, settings)
    edge = ScriptedEdge(settings, stream, rate_per_s=rate_for(n, 12)).start()
    try:
        edge.wait(f"emitted:{n // 4}", 60)
        mqtt.stop()
        edge.wait(f"emitted:{3 * n // 4}", 60)
        depth_down = edge.outbox.depth()
        mqtt.start()
        recovery = wait_drained(edge, time.monotonic(), "link down")
    finally:
        edge.close()
    return collect_result("link down (broker stopped)", settings, stream, sub, recovery,
                          [f"outbox held {depth_down} events while down"])  # fmt: skip


def edge_crash(env: ChaosEnv, n: int) -> ScenarioResult:
    """The edge (a child process) SIGKILLed while its outbox holds events, then a new edge on
    the same outbox file resumes and drains it."""
    stream = ScriptedStream(n, cams=("cam-1", "cam-2"))
    mqtt = env.mqtt_broker()
    settings = env.settings(stream, mqtt, env.kafka_broker())
    _, _, sub = start_cloud_side(env, settings)
    child = env.scripted_edge_child(settings, child_args(stream, rate_for(n, 12)))
    child.start()
    outbox = settings.edge.outbox_path
    wait_until(lambda: outbox_progress(outbox)[0] >= n // 3, 60)
    mqtt.stop()  # the link goes down, so the outbox fills up ...
    wait_until(lambda: outbox_progress(outbox)[0] >= 2 * n // 3, 60)
    child.kill()  # ... and the edge dies holding it
    emitted, depth = outbox_progress(outbox)
    mqtt.start()
    fixed = time.monotonic()
    edge = ScriptedEdge(settings, stream, rate_per_s=rate_for(n, 12)).start()
    try:
        recovery = wait_drained(edge, fixed, "edge crash")
    finally:
        edge.close()
    return collect_result("edge SIGKILL, outbox kept", settings, stream, sub, recovery,
                          [f"killed after {emitted}/{n} emitted with {depth} in the outbox"])  # fmt: skip


# --------------------------------------------------------------------------- (3) bridge crash


def bridge_crash(env: ChaosEnv, n: int) -> ScenarioResult:
    """``pipeline bridge`` SIGKILLed mid-stream and started again."""
    stream = ScriptedStream(n, cams=("cam-1", "cam-2"))
    settings = env.settings(stream, env.mqtt_broker(), env.kafka_broker())
    (bridge,), _, sub = start_cloud_side(env, settings)
    edge = ScriptedEdge(settings, stream, rate_per_s=rate_for(n, 12)).start()
    try:
        edge.wait(f"emitted:{n // 3}", 60)
        bridge.kill()
        time.sleep(2.0)
        fixed = time.monotonic()
        bridge.start()
        recovery = wait_drained(edge, fixed, "bridge crash")
    finally:
        edge.close()
    return collect_result("bridge SIGKILL+restart", settings, stream, sub, recovery, [])


def bridge_pair_one_dies(env: ChaosEnv, n: int) -> ScenarioResult:
    """Two bridges on one MQTT 5 shared subscription (and one downlink consumer group); one is
    SIGKILLed mid-stream and stays dead."""
    stream = ScriptedStream(n, cams=("cam-1", "cam-2", "cam-3", "cam-4"))
    settings = env.settings(stream, env.mqtt_broker(), env.kafka_broker())
    (_, second), _, sub = start_cloud_side(env, settings, bridges=2)
    edge = ScriptedEdge(settings, stream, rate_per_s=rate_for(n, 12)).start()
    try:
        edge.wait(f"emitted:{n // 3}", 60)
        second.kill()
        recovery = wait_drained(edge, time.monotonic(), "bridge pair")
        replayed = edge.metrics.counter("outbox_replayed_total")
    finally:
        edge.close()
    return collect_result("2 bridges, 1 SIGKILLed", settings, stream, sub, recovery,
                          [f"edge replayed {replayed:.0f} events (ack timeout)"])  # fmt: skip


# --------------------------------------------------------------------------- (4) Kafka broker restart


def kafka_restart(env: ChaosEnv, n: int) -> ScenarioResult:
    """The (memory-only, local) Kafka broker killed while the bridge keeps receiving, then
    restarted empty: the bridge holds its MQTT acks (the edge keeps the events) and resumes.

    What Tansu held before the restart is gone (memory-only build); in Kafka terms those records
    were acknowledged, so the edge rightly deleted them: only a durable, replicated Kafka keeps
    them. The check is on the events sent after the first half was acknowledged.
    """
    stream = ScriptedStream(n, cams=("cam-1", "cam-2"))
    kafka = env.kafka_broker(private=True)
    settings = env.settings(stream, env.mqtt_broker(), kafka)
    bridges, _, _ = start_cloud_side(env, settings, cloud=False)
    half = n // 2
    edge = ScriptedEdge(settings, stream, rate_per_s=rate_for(n, 10)).start()
    try:
        edge.wait(f"emitted:{half}", 60)
        edge.wait("emitted:0", 0)
        wait_until(lambda: edge.outbox.depth() == 0, 60)  # the first half is in Kafka
        kafka.kill()
        killed_at = edge.emitted()
        edge.wait(f"emitted:{n}", 120)
        time.sleep(5.0)  # the edge's ack timeout passes: it replays, the bridge still holds
        depth_down = edge.outbox.depth()
        stalled_ok = depth_down >= n - killed_at
        # The restarted broker is empty and Tansu auto-creates a topic on the first produce; a
        # bridge faster than ensure_topics would produce into that one, which re-creating the
        # topic with our partition count then wipes. Apache Kafka keeps its topics over a restart:
        # hold the bridge (SIGSTOP) only while this stand-in is given its topics back.
        for b in bridges:
            b.suspend()
        try:
            kafka.start()
            ensure_topics(settings.kafka)
        finally:
            for b in bridges:
                b.resume()
        recovery = wait_drained(edge, time.monotonic(), "kafka restart")
    finally:
        edge.close()
    after = {stream.event(i).id for i in range(killed_at, n)}
    notes = [
        f"while down: outbox kept {depth_down} of {n - killed_at} new events"
        f" ({'nothing acked without Kafka' if stalled_ok else 'ACKED WITHOUT KAFKA'})",
        f"{killed_at} events acked before the restart are lost with the memory-only broker",
    ]
    res = collect_result("kafka (memory) restart", settings, stream, None, recovery, notes, event_ids=after)
    res.checks["nothing acked while Kafka was down"] = stalled_ok
    return res


# --------------------------------------------------------------------------- (5) Faust worker crash


def cloud_worker_crash(env: ChaosEnv, n: int) -> ScenarioResult:
    """Two Faust workers in one group; one SIGKILLed mid-stream: its partitions move to the
    other, which recovers the tables from the changelogs; same alert ids, none lost."""
    stream = ScriptedStream(n, cams=("cam-1", "cam-2", "cam-3", "cam-4", "cam-5", "cam-6"))
    settings = env.settings(stream, env.mqtt_broker(), env.kafka_broker())
    start_cloud_side(env, settings, cloud=False)
    run = settings.cloud.data_dir
    w1 = env.cloud(settings, "cloud1", start=False, data_dir=run / "w1")
    w2 = env.cloud(settings, "cloud2", start=False, data_dir=run / "w2")
    start_all(w1, w2)
    sub = env.subscriber(settings)
    edge = ScriptedEdge(settings, stream, rate_per_s=rate_for(n, 15)).start()
    try:
        edge.wait(f"emitted:{n // 3}", 60)
        w2.kill()
        killed = time.monotonic()
        edge.wait(f"emitted:{n}", 120)
        wait_drained(edge, killed, "worker crash")
        expected = set(stream.expected_alerts())
        wait_until(lambda: expected <= set(sub.stats.unique), ALERT_TIMEOUT_S, 0.2)
        recovery = time.monotonic() - killed
    finally:
        edge.close()
    return collect_result("faust worker SIGKILL (2 workers)", settings, stream, sub, recovery,
                          ["recovery: kill -> every alert received"])  # fmt: skip


# --------------------------------------------------------------------------- (6) model server crash


def _breaker(port: int) -> tuple[int, int | None]:
    """(times opened, state: 0 closed / 1 half-open / 2 open) from the worker's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0, None
    opened = re.search(r"^pipeline_cloud_breaker_opened_total (\d+)", text, re.M)
    state = re.search(r"^pipeline_cloud_breaker_state (\d+)", text, re.M)
    return (int(opened.group(1)) if opened else 0), (int(state.group(1)) if state else None)


def model_server_crash(env: ChaosEnv, n: int) -> ScenarioResult:
    """The TF-Serving-compatible model server SIGKILLed mid-stream and restarted: the worker's
    circuit breaker opens (alerts go out ``unverified``) and closes again; alert ids do not depend
    on the verdict (edge_weight 1: the edge score alone decides firing)."""
    stream = ScriptedStream(n, cams=("cam-1", "cam-2"), crops=True)
    ms = env.stack.enter_context(ModelServerProcess(env.work_dir / "model-server", REPO_ROOT / "models"))
    settings = env.settings(
        stream, env.mqtt_broker(), env.kafka_broker(),
        model_server={"address": ms.address, "breaker_failures": 2, "breaker_reset_s": 2.0, "timeout_s": 3.0},
    )  # fmt: skip
    cloud_over: dict[str, Any] = {"escalation": "always", "edge_weight": 1.0, "web_enabled": True}
    settings = settings.model_copy(update={"cloud": settings.cloud.model_copy(update=cloud_over)})
    web = settings.cloud.web_port
    _, _, sub = start_cloud_side(env, settings)
    assert sub is not None
    # The breaker closes only on a successful trial call, i.e. an event with a crop that arrives
    # after the restart. Paced by time alone, a slow restart (TensorFlow loading on a busy machine)
    # outlasted the stream and no call was ever tried again ("closed again" False after 120 s, every
    # later alert unverified). So the stream stops at half way until the server is back.
    restarted = threading.Event()
    edge = ScriptedEdge(
        settings, stream, rate_per_s=rate_for(n, 45), limit=lambda: n if restarted.is_set() else n // 2
    ).start()
    try:
        edge.wait(f"emitted:{n // 5}", 60)
        ms.kill()  # the events up to n // 2 fail to verify: the breaker opens
        opened = wait_until(lambda: _breaker(web)[0] >= 1, 60, 0.5)
        t_restart = time.monotonic()
        ms.start()
        fixed = time.monotonic()
        restarted.set()  # the second half's crops are the breaker's trial calls
        closed = wait_until(lambda: _breaker(web)[1] == 0, 120, 0.5)
        recovery = time.monotonic() - fixed
        wait_drained(edge, fixed, "model server crash")
    finally:
        edge.close()
    res = collect_result("model server SIGKILL+restart", settings, stream, sub, recovery, [])
    verdicts: dict[str, int] = {}
    for r in sub.stats.unique.values():
        verdicts[r.alert.verification] = verdicts.get(r.alert.verification, 0) + 1
    res.notes += [f"breaker opened={opened} closed again={closed}", f"verdicts {verdicts}",
                  f"model server ready {fixed - t_restart:.1f} s after its restart",
                  "recovery: restart -> breaker closed"]  # fmt: skip
    res.checks.update({"breaker opened": opened, "breaker closed again": closed})
    return res
