"""Bandwidth: what the edge sends instead of video.

``run_edge`` (the code ``pipeline edge`` runs) processes the sample clip against the local
Mosquitto; ``EdgeSummary.bytes_published`` is the event payload bytes the broker acknowledged
(PUBACK). No bridge runs, so nothing is acknowledged end to end; ``edge.ack_timeout_s`` is set
high so no event is replayed and counted twice. Per minute of video = bytes * 60 / clip seconds.

Baselines, per minute of the same video: the source file itself (MPEG-4 Part 2, as shipped in
``samples/``), and a 2 Mbit/s H.264 stream (15,000,000 bytes a minute), a typical setting for
streaming one 720p-class camera to the cloud. Status messages (one small retained JSON per camera
every ``edge.status_interval_s``) and MQTT/TCP framing are not counted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict

import paho.mqtt.client as mqtt

from benchmarks.harness import BenchResult, Context, clip_info, median
from benchmarks.table import Row, ratio_at_most
from pipeline.edge_stage.runner import EdgeSummary, run_edge
from pipeline.mqtt_client import connect, make_client
from pipeline.operators.schema import Rejected, decode_event
from pipeline.settings import SAMPLE_CLIP, Settings
from pipeline.topics import Kind, Topics

H264_BITS_PER_S = 2_000_000
GROUP = "bandwidth"


class EventBytes:
    """Counts event payload bytes on MQTT, those of events with a crop apart."""

    def __init__(self, settings: Settings) -> None:
        self.total = self.with_crop = self.messages = 0
        self._lock = threading.Lock()
        self._settings = settings
        self._subscribed = threading.Event()
        self._client = make_client(settings.mqtt, f"{settings.mqtt.topic_prefix}-bytes")
        topic = Topics(settings.mqtt.topic_prefix).all_cameras(Kind.EVENTS)
        self._client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        event = decode_event(payload)
        with self._lock:
            self.messages += 1
            self.total += len(payload)
            if not isinstance(event, Rejected) and event.crop:
                self.with_crop += len(payload)

    def __enter__(self) -> EventBytes:
        connect(self._client, self._settings.mqtt)
        if not self._subscribed.wait(10):
            raise TimeoutError("no SUBACK for the events topic")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def run_once(ctx: Context) -> tuple[EdgeSummary, EventBytes]:
    camera = {"id": "cam-1", "source": str(SAMPLE_CLIP), "realtime": False, "loop": False}
    settings = ctx.fresh_settings("bw", edge={"cameras": [camera], "ack_timeout_s": 3600.0, "final_ack_wait_s": 2.0})
    with EventBytes(settings) as counter:
        summary = run_edge(settings, threading.Event())
        time.sleep(0.5)
    return summary, counter


def run(ctx: Context) -> BenchResult:
    fps, frames, _, _ = clip_info(SAMPLE_CLIP)
    video_s = frames / fps
    file_bytes = SAMPLE_CLIP.stat().st_size
    summaries = []
    counters = []
    for i in range(ctx.repeats):
        ctx.log(f"bandwidth: run_edge on {SAMPLE_CLIP.name} ({video_s:.0f} s of video), run {i + 1}/{ctx.repeats}")
        s, c = run_once(ctx)
        counters.append(c)
        ctx.log(
            f"   {s.events_published} events published, {s.bytes_published:,} B, {s.tracks} tracks,"
            f" by type {s.events_by_type}"
        )
        summaries.append(s)
    per_min = 60.0 / video_s
    published = median(s.bytes_published * per_min for s in summaries)
    source = file_bytes * per_min
    h264 = H264_BITS_PER_S / 8 * 60
    no_crop = median((c.total - c.with_crop) * per_min for c in counters)
    events_per_track = median(s.events_per_track for s in summaries)
    event_bytes = median(s.median_event_bytes for s in summaries)
    crop_events = median(s.events_by_type.get("track_started", 0) for s in summaries)

    def less(base: float) -> str:
        return f"{base / published:,.0f}x less" if published else "nothing published"

    rows = [
        Row.make(
            "bytes/min published vs 2 Mbit/s H.264",
            published,
            "B/min",
            baseline=h264,
            baseline_label="H.264",
            target=ratio_at_most(1 / 1000),
            group=GROUP,
            note=f"{less(h264)} than a 2 Mbit/s H.264 stream (target: 1000x less)",
        ),
        Row.make(
            "bytes/min published vs the source file",
            published,
            "B/min",
            baseline=source,
            baseline_label="mp4v file",
            group=GROUP,
            note=f"{less(source)}; {crop_events:.0f} track_started events carry a JPEG crop",
        ),
        Row.make(
            "bytes/min without crops vs 2 Mbit/s H.264",
            no_crop,
            "B/min",
            baseline=h264,
            baseline_label="H.264",
            group=GROUP,
            note="events as received by an MQTT subscriber, those carrying a crop left out"
            + (f"; {h264 / no_crop:,.0f}x less" if no_crop else ""),
        ),
        Row.make("events per track", events_per_track, "", group=GROUP),
        Row.make("median event size (no crop)", event_bytes, "B", group=GROUP),
    ]
    series = {
        "summaries": [asdict(s) for s in summaries],
        "mqtt_bytes": [{"total": c.total, "with_crop": c.with_crop, "messages": c.messages} for c in counters],
        "video_s": video_s,
        "file_bytes": file_bytes,
        "h264_bytes_per_min": h264,
    }
    return BenchResult(rows, series)
