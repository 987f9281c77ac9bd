"""Scenarios that degrade the network path between the edge and Mosquitto instead of killing a
process: a TCP proxy that delays, holds (half-open) and resets the link, and a network namespace
whose veth pair drops packets (loss, then a blackhole). Each is a
:data:`pipeline.chaos.scenarios.Scenario`.

Separate from :mod:`pipeline.chaos.crash_scenarios` because these measure the edge's side of a
bad link (keep-alive detection, paho's queue, RSS, events/s under loss) with helpers and tuning
constants of their own; the steps all scenarios share are in :mod:`pipeline.chaos.scenario_steps`.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

from pipeline.chaos.netns import LossyNetns
from pipeline.chaos.rig import ChaosEnv, read_events
from pipeline.chaos.scenario_steps import (
    DRAIN_TIMEOUT_S,
    ScenarioResult,
    collect_result,
    rate_for,
    start_cloud_side,
    wait_drained,
)
from pipeline.chaos.scripted_edge import ScriptedEdge, child_args, outbox_progress, read_status, write_gate
from pipeline.chaos.stream import ScriptedStream
from pipeline.chaos.tcp_proxy import TcpProxy
from pipeline.compat.paho_uplink import queued_publishes
from pipeline.testing import wait_until

# --------------------------------------------------------------------------- (7) slow / broken link


def flaky_link(env: ChaosEnv, n: int) -> ScenarioResult:
    """The edge reaches Mosquitto through :class:`TcpProxy`: 150 ms delay, then a half-open
    (held) link that only keep-alives detect, then every connection reset."""
    stream = ScriptedStream(n, cams=("cam-1", "cam-2"))
    mqtt = env.mqtt_broker()
    settings = env.settings(stream, mqtt, env.kafka_broker())
    _cloud_side_result = start_cloud_side(env, settings)
    sub = _cloud_side_result[2]
    proxy = env.stack.enter_context(TcpProxy(mqtt.host, mqtt.port))
    edge_settings = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"port": proxy.port})})
    edge = ScriptedEdge(edge_settings, stream, rate_per_s=rate_for(n, 20)).start()
    keepalive = settings.mqtt.keepalive_s
    peak = {"paho_queue": 0, "inflight": 0}
    stop_watch = threading.Event()

    def watch() -> None:
        while not stop_watch.wait(0.1):
            peak["paho_queue"] = max(peak["paho_queue"], queued_publishes(edge.publisher.client) or 0)
            peak["inflight"] = max(peak["inflight"], edge.publisher.inflight())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        edge.publisher.wait_connected(30)
        proxy.delay_s = 0.15
        edge.wait(f"emitted:{n // 4}", 60)
        proxy.delay_s = 0.0
        proxy.hold()
        held = time.monotonic()
        detected = wait_until(lambda: not edge.publisher.connected, 10 * keepalive, 0.05)
        detect_s = time.monotonic() - held
        edge.wait(f"emitted:{n // 2}", 60)
        proxy.cut()
        proxy.release()
        fixed = time.monotonic()
        recovery = wait_drained(edge, fixed, "flaky link")
    finally:
        stop_watch.set()
        watcher.join(2)
        edge.close()
    notes = [
        f"half-open link detected={detected} after {detect_s:.1f} s (keepalive {keepalive} s,"
        f" {detect_s / keepalive:.1f}x)",
        f"edge memory: peak paho queue {peak['paho_queue']}, peak in flight {peak['inflight']}"
        f" (cap {edge.publisher.max_inflight}); the rest waits on disk",
    ]
    res = collect_result("proxy: delay, half-open, reset", settings, stream, sub, recovery, notes)
    res.checks["half-open link detected"] = detected
    res.checks["paho queue bounded by the in-flight cap"] = peak["paho_queue"] <= edge.publisher.max_inflight + 10
    res.measures.update(detect_s=detect_s, keepalive_s=keepalive, peak_paho_queue=peak["paho_queue"])
    return res


# --------------------------------------------------------------------------- (8) packet loss, blackhole

LOSS_PCT = 15
EMIT_RATE = 2000.0  # events/s into the outbox once a gate opens: the link, not the emitter, sets the pace
# On a veth the round trip is ~0.1 ms, so TCP repairs most losses within a flight (fast
# retransmit, SACK) and a long burst hardly slows down; what loss costs here is the 200 ms+
# retransmission timeout when the tail of a flight is lost. Small closed-loop bursts (the next once
# the last is acknowledged) make each burst pay it, so the lossy rate sits well apart from the
# baseline (measured: median 163 vs 54 events/s per burst of 25 at 20 % loss) on a loaded machine.
BURST = 25
# Edge RSS may grow this much over its warm size: SQLite's page cache and allocator noise (measured
# growth ~0.6 MiB). What holds memory down is paho's in-flight cap, checked on its own.
RSS_SLACK_KB = 16 * 1024
# paho gives up ~2x its keep-alive after the last byte from the broker; our clients hand it 3/4
# of mqtt.keepalive_s (pipeline.mqtt_client.paho_keepalive), so the edge should see a dead link
# within ~1.5x the setting. The margin: paho's loop wakes once a second, so the ping and the
# give-up may each come up to 1 s late, plus 1 s of scheduling delay on a loaded 2-core machine.
DETECT_KEEPALIVES = 1.5
DETECT_MARGIN_S = 3.0


def _all_acked(outbox: Path, emitted: int) -> bool:
    return outbox_progress(outbox) == (emitted, 0)


def _bursts(gate: Path, outbox: Path, upto: int, what: str) -> float:
    """Let the edge emit up to event ``upto`` in bursts of :data:`BURST`, each once the last is
    acknowledged; events/s over the whole phase."""
    done = outbox_progress(outbox)[0]  # the last phase drained: emitted == acknowledged
    count, began = upto - done, time.monotonic()
    while done < upto:
        done = min(upto, done + BURST)
        write_gate(gate, done)
        if not wait_until(functools.partial(_all_acked, outbox, done), DRAIN_TIMEOUT_S, 0.02):
            raise AssertionError(f"{what}: {done} events not acknowledged in {DRAIN_TIMEOUT_S:.0f} s "
                                 f"(emitted, in outbox = {outbox_progress(outbox)})")  # fmt: skip
    return count / (time.monotonic() - began)


def _watch_dark(status: Path, mqtt_log: Path, client_id: str, before: int, dark: float, limit_s: float) -> tuple[
    float | None, float | None
]:  # fmt: skip
    """Seconds from ``dark`` until the edge saw its connection drop, and until Mosquitto dropped
    the edge for silence (its log line), each ``None`` if not within ``limit_s``."""
    edge_s = broker_s = None
    line = f"Client {client_id} has exceeded timeout"
    offset = mqtt_log.stat().st_size if mqtt_log.exists() else 0
    while time.monotonic() - dark < limit_s and (edge_s is None or broker_s is None):
        downs = read_status(status).get("disconnects", [])
        if edge_s is None and len(downs) > before:
            edge_s = downs[before] - dark
        if broker_s is None and mqtt_log.exists():
            with mqtt_log.open("rb") as f:
                f.seek(offset)
                if line.encode() in f.read():
                    broker_s = time.monotonic() - dark
        time.sleep(0.05)
    return edge_s, broker_s


def packet_loss(env: ChaosEnv, n: int, *, loss_pct: int = LOSS_PCT) -> ScenarioResult:
    """The edge (a child process) in a network namespace of its own, joined to the host's
    Mosquitto by a veth pair whose packets nftables drops at random (:mod:`pipeline.chaos.netns`;
    this kernel has no ``tc netem``). A quarter of the stream goes in bursts without loss
    (baseline events/s), a quarter under ``loss_pct`` % loss each way; then a blackhole (100 %
    loss: the connection stays open, only keep-alives tell) while the rest piles up on disk, then
    the link heals.

    Checks: every event in Kafka by id and by (camera, seq); slower under loss; the edge sees the
    dead link within paho's bound (:data:`DETECT_KEEPALIVES`; when Mosquitto dropped the edge is
    reported next to it); the edge's RSS stays near its warm size, paho holds no more than the
    in-flight cap, the outbox stays within its caps. Runs no cloud worker (a link fault).
    """
    link = env.stack.enter_context(LossyNetns())  # before Mosquitto, which listens on the host end
    stream = ScriptedStream(n, cams=("cam-1", "cam-2"))
    mqtt = env.mqtt_broker(host=link.host_addr)
    settings = env.settings(stream, mqtt, env.kafka_broker())
    start_cloud_side(env, settings, cloud=False)
    run, outbox, keepalive = Path(settings.local.run_dir), settings.edge.outbox_path, settings.mqtt.keepalive_s
    gate, status = run / "edge-gate", run / "edge-status.json"
    write_gate(gate, 0)
    args = [*child_args(stream, EMIT_RATE), "--gate", str(gate), "--status", str(status), "--drain-timeout", "900"]
    env.scripted_edge_child(settings, args, wrap=link.exec_prefix()).start()
    b = max(10, n // 4)
    base_eps = _bursts(gate, outbox, b, "no loss")
    warm_rss = read_status(status).get("rss_kb", 0)
    link.counters(reset=True)
    link.set_loss(loss_pct)
    downs_before = len(read_status(status).get("disconnects", []))
    lossy_eps = _bursts(gate, outbox, 2 * b, f"{loss_pct} % loss")
    link.set_loss(0)
    seen = link.counters(reset=True)
    downs = read_status(status).get("disconnects", [])
    lossy_drops = len(downs) - downs_before
    # Blackhole while the edge is busy: the rest of the stream is released as the link dies.
    dark = time.monotonic()  # before the rule applies: detection times are upper bounds
    link.set_loss(100)
    write_gate(gate, n)
    edge_s, broker_s = _watch_dark(status, mqtt.log_path, settings.edge.node_id, len(downs), dark, 4 * keepalive)
    wait_until(lambda: outbox_progress(outbox)[0] >= n, 60)
    time.sleep(max(0.0, dark + 3 * keepalive - time.monotonic()))  # dark a while: reconnects fail too
    dark_depth = outbox_progress(outbox)[1]
    connects = len(read_status(status).get("connects", []))
    link.set_loss(0)
    healed = time.monotonic()
    if edge_s is not None:  # an edge that never noticed has nothing to reconnect
        wait_until(lambda: len(read_status(status).get("connects", [])) > connects, DRAIN_TIMEOUT_S, 0.05)
    reconnect_s = time.monotonic() - healed
    if not wait_until(lambda: outbox_progress(outbox) == (n, 0), DRAIN_TIMEOUT_S, 0.05):
        raise AssertionError(f"packet loss: outbox not drained after the heal {outbox_progress(outbox)}")
    recovery = time.monotonic() - healed
    st = read_status(status)
    events = read_events(settings)
    expected = {(c, s) for c in stream.cams for s in range(1, 1 + sum(1 for i in range(n) if stream.event(i).cam == c))}
    got = {(c, s) for c, seqs in events.order.items() for s in seqs}
    growth_kb = st.get("peak_rss_kb", 0) - warm_rss
    notes = [
        f"events/s acknowledged: {base_eps:.0f} without loss, {lossy_eps:.0f} at {loss_pct} % loss"
        f" (measured {seen.loss:.0%} of {seen.out_packets + seen.in_packets} packets dropped;"
        f" {lossy_drops} disconnects under loss)",
        f"blackhole seen by the edge after {_s(edge_s)} ({_x(edge_s, keepalive)} keep-alive {keepalive} s),"
        f" by Mosquitto after {_s(broker_s)} ({_x(broker_s, keepalive)}); reconnect {reconnect_s:.1f} s after the heal",
        f"edge RSS {warm_rss / 1024:.0f} MiB warm, peak {st.get('peak_rss_kb', 0) / 1024:.0f} MiB; peak paho queue"
        f" {st.get('peak_paho_queue')} (in-flight cap {st.get('max_inflight')}); outbox held {dark_depth} while dark,"
        f" peak {st.get('peak_outbox')} (cap {st.get('outbox_max_events')}), dropped {st.get('dropped', 0):.0f}",
    ]
    res = collect_result(f"netns: {loss_pct} % loss, blackhole", settings, stream, None, recovery, notes, events=events)
    res.checks.update({
        "every (cam, seq) in Kafka, none unexpected": got == expected,
        "slower under loss": lossy_eps < base_eps,
        f"edge saw the blackhole within {DETECT_KEEPALIVES:g}x keep-alive + {DETECT_MARGIN_S:g} s": edge_s is not None
        and edge_s <= DETECT_KEEPALIVES * keepalive + DETECT_MARGIN_S,
        "edge RSS bounded": growth_kb <= RSS_SLACK_KB,
        "paho queue bounded by the in-flight cap": st.get("peak_paho_queue", 0) <= st.get("max_inflight", 0) + 10,
        "outbox within its caps, nothing dropped": st.get("peak_outbox", 0) <= st.get("outbox_max_events", 0)
        and not st.get("dropped"),
    })  # fmt: skip
    res.measures.update(
        base_eps=base_eps, lossy_eps=lossy_eps, loss_measured=seen.loss, keepalive_s=keepalive,
        edge_detect_s=-1.0 if edge_s is None else edge_s, broker_detect_s=-1.0 if broker_s is None else broker_s,
        reconnect_s=reconnect_s, rss_warm_kb=warm_rss, rss_growth_kb=growth_kb,
        peak_paho_queue=st.get("peak_paho_queue", 0), missing_pairs=len(expected - got),
    )  # fmt: skip
    return res


def _s(v: float | None) -> str:
    return "never" if v is None else f"{v:.1f} s"


def _x(v: float | None, keepalive: float) -> str:
    return "-" if v is None else f"{v / keepalive:.2f}x"
