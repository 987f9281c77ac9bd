"""Publish valid camera events into Mosquitto as fast as possible (or at a fixed rate), in a
separate process so the publishers do not share a GIL with the measuring process.

Used by the bridge benchmark through :func:`start_feeders`; each feeder has its own paho client
(MQTT 5, QoS 1, unlimited local queue) and its own cameras, so per-camera seqs stay in order.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.operators.schema import Event, encode_event
from pipeline.topics import Kind, Topics


@dataclass(frozen=True)
class FeedPlan:
    host: str
    port: int
    prefix: str
    site: str
    cams: tuple[str, ...]
    count: int  # events from this feeder, spread over its cameras
    rate_per_s: float | None = None  # None: as fast as the client goes
    ts_now: bool = False  # stamp each event with its publish time (latency runs)


def make_event(site: str, cam: str, seq: int, ts: int) -> bytes:
    return encode_event(
        Event(
            id=uuid.uuid4().hex,
            site=site,
            cam=cam,
            ts=ts,
            seq=seq,
            type="track_updated",
            track=seq // 50 + 1,
            label="person",
            score=0.8,
            box=(0.1, 0.2, 0.3, 0.6),
            det="bench@1",
        )
    )


def feed(plan: FeedPlan, go: MpEvent, out: Any) -> None:
    """Connect, wait for ``go``, publish ``plan.count`` events, wait for every PUBACK, report."""
    topics = Topics(plan.prefix)
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"feeder-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(1000)
    acked = 0
    done = threading.Event()
    lock = threading.Lock()

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        nonlocal acked
        with lock:
            acked += 1
            if acked >= plan.count:
                done.set()

    client.on_publish = on_publish
    client.connect(plan.host, plan.port, keepalive=30)
    client.loop_start()
    ts0 = int(time.time() * 1000)
    pre = None
    if not plan.ts_now:  # pre-generate: the timed part is publishing only
        pre = [
            make_event(plan.site, plan.cams[i % len(plan.cams)], i // len(plan.cams) + 1, ts0)
            for i in range(plan.count)
        ]
    out.put(("ready", 0.0))
    go.wait()
    t0 = time.monotonic()
    for i in range(plan.count):
        cam = plan.cams[i % len(plan.cams)]
        if plan.rate_per_s:
            delay = t0 + i / plan.rate_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        payload = (
            pre[i] if pre is not None else make_event(plan.site, cam, i // len(plan.cams) + 1, int(time.time() * 1000))
        )
        client.publish(topics.camera(plan.site, cam, Kind.EVENTS), payload, qos=1)
    sent = time.monotonic()
    done.wait(300)
    out.put(("done", sent - t0, time.monotonic() - t0, acked))
    client.disconnect()
    client.loop_stop()


class Feeders:
    """Several feeder processes started together."""

    def __init__(self, plans: list[FeedPlan]) -> None:
        ctx = mp.get_context("spawn")
        self.go = ctx.Event()
        self.out = ctx.Queue()
        self.procs = [ctx.Process(target=feed, args=(p, self.go, self.out), daemon=True) for p in plans]

    def start(self, timeout_s: float = 60.0) -> None:
        for p in self.procs:
            p.start()
        for _ in self.procs:
            msg = self.out.get(timeout=timeout_s)
            assert msg[0] == "ready", msg

    def go_now(self) -> float:
        self.go.set()
        return time.monotonic()

    def join(self, timeout_s: float = 300.0) -> list[tuple[Any, ...]]:
        results = [self.out.get(timeout=timeout_s) for _ in self.procs]
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        return results


def start_feeders(plans: list[FeedPlan]) -> Feeders:
    f = Feeders(plans)
    f.start()
    return f
