"""run_edge end to end against the session Mosquitto: events, status, config, source failures."""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline.edge_stage.runner import EdgeSummary, run_edge
from pipeline.local_stack.ports import free_port
from pipeline.operators.schema import encode_event
from pipeline.settings import Settings
from pipeline.testing import cut_clip
from pipeline.topics import Kind, Topics
from tests.edge_stage.edge_helpers import Collector
from tests.edge_stage.mjpeg_stream import MjpegCamera

pytestmark = pytest.mark.integration


def _status(c: Collector, settings: Settings, cam: str = "cam-1") -> list[dict[str, Any]]:
    topic = Topics(settings.mqtt.topic_prefix).camera("s1", cam, Kind.STATUS)
    return [json.loads(p) for p in c.payloads(topic)]


class Background:
    """run_edge in a thread (for live-style tests)."""

    def __init__(self, settings: Settings) -> None:
        self.stop = threading.Event()
        self.summary: EdgeSummary | None = None
        self.thread = threading.Thread(target=self._run, args=(settings,), daemon=True)
        self.thread.start()

    def _run(self, settings: Settings) -> None:
        self.summary = run_edge(settings, self.stop)

    def finish(self) -> EdgeSummary:
        self.stop.set()
        self.thread.join(30)
        assert self.summary is not None
        return self.summary


def test_clip_events_reach_subscriber_valid_and_small(
    edge_settings: Callable[..., Settings], collector_for: Callable[..., Collector], short_clip: Path
) -> None:
    port = free_port()
    settings = edge_settings([{"id": "cam-1", "source": str(short_clip), "crop_max_bytes": 4096}], metrics_port=port)
    collector = collector_for(settings, ack=True)  # plays the bridge
    progress: list[Any] = []
    scraped: list[str] = []

    def on_progress(p: Any) -> None:
        progress.append(p)
        if not scraped:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                scraped.append(r.read().decode())

    summary = run_edge(settings, threading.Event(), on_progress)

    assert summary.frames_read == 40 and summary.frames_sampled == 20
    assert summary.frames_detected + summary.frames_gated == 20
    assert summary.events > 0 and summary.tracks > 0
    assert summary.outbox_depth == 0, "acked by the collector"
    assert progress, "progress reported"
    assert scraped and "edge_frames_read_total" in scraped[0]
    events = collector.events
    assert {e.seq for e in events} == set(range(1, summary.events + 1))
    assert {e.label for e in events} <= set(settings.edge.cameras[0].labels)
    assert "person" in {e.label for e in events}
    types = [e.type for e in events]
    assert "track_started" in types and "track_ended" in types
    sizes = [len(encode_event(e)) for e in events if e.crop is None]
    assert statistics.median(sizes) < 300
    crops = [e.crop for e in events if e.crop is not None]
    assert crops and all(len(c) <= 4096 for c in crops)
    # crops ride on track_started, and on at most crop_refreshes later events marked as a better view
    later = Counter(e.track for e in events if e.crop is not None and e.type != "track_started")
    assert all(e.attrs.get("view") == "better" for e in events if e.crop is not None and e.type != "track_started")
    assert all(n <= settings.edge.cameras[0].crop_refreshes for n in later.values())
    # retained status: online, then offline at the end of the file, with the model tag
    states = _status(collector, settings)
    assert states[0]["state"] == "online" and states[-1]["state"] == "offline"
    assert states[-1]["model"].startswith(settings.edge.detector.split("-")[0])
    node = Topics(settings.mqtt.topic_prefix).node_status("s1", settings.edge.node_id)
    assert json.loads(collector.payloads(node)[-1])["state"] == "offline"
    # issue 16: one small snapshot for the console (default cadence 30 s: the 8 s clip gets one)
    snapshots = collector.payloads(Topics(settings.mqtt.topic_prefix).camera("s1", "cam-1", Kind.SNAPSHOT))
    assert len(snapshots) == 1
    assert snapshots[0][:2] == b"\xff\xd8" and len(snapshots[0]) <= settings.edge.snapshot_max_bytes
    image = cv2.imdecode(np.frombuffer(snapshots[0], np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] == 640


def test_config_applied_live_and_invalid_rejected(
    edge_settings: Callable[..., Settings], collector_for: Callable[..., Collector], short_clip: Path
) -> None:
    settings = edge_settings([{"id": "cam-1", "source": str(short_clip), "loop": True, "realtime": True}])
    collector = collector_for(settings)
    bg = Background(settings)
    topics = Topics(settings.mqtt.topic_prefix)
    cfg_topic = topics.camera("s1", "cam-1", Kind.CONFIG)
    try:
        assert collector.wait_for(lambda: any(s["state"] == "online" for s in _status(collector, settings)))
        cfg = {"v": 1, "site": "s1", "cam": "cam-1", "rev": 1, "config": {"detect_fps": 2.0, "min_score": 0.5}}
        collector.publish(cfg_topic, json.dumps(cfg).encode(), retain=True)
        assert collector.wait_for(
            lambda: any("config rev 1 applied" in s["reason"] for s in _status(collector, settings))
        )
        bad = {"v": 1, "site": "s1", "cam": "cam-1", "rev": 2, "config": {"detect_fps": 0}}
        collector.publish(cfg_topic, json.dumps(bad).encode(), retain=True)
        assert collector.wait_for(lambda: any("config rejected" in s["reason"] for s in _status(collector, settings)))
        last = _status(collector, settings)[-1]
        assert "detect_fps" in last["reason"]
        assert last["metrics"]["config_rev"] == 1 and last["metrics"]["config_rejected"] == 1
        # applied live: at 2 fps, a further second samples about 2 frames, not 5
        before = time.monotonic()
        n0 = last["metrics"]["frames_read"]
        time.sleep(1.5)
    finally:
        summary = bg.finish()
        collector.publish(cfg_topic, b"", retain=True)
    assert summary.frames_sampled < summary.frames_read
    assert n0 >= 0 and time.monotonic() - before >= 1.5


def test_file_that_disappears_reports_reconnecting(
    edge_settings: Callable[..., Settings], collector_for: Callable[..., Collector], tmp_path: Path
) -> None:
    clip = cut_clip(tmp_path / "tiny.mp4", 0, 6)
    settings = edge_settings([{"id": "cam-1", "source": str(clip), "loop": True, "realtime": True}])
    collector = collector_for(settings)
    bg = Background(settings)
    try:
        assert collector.wait_for(lambda: any(s["state"] == "online" for s in _status(collector, settings)))
        clip.unlink()
        assert collector.wait_for(lambda: any(s["state"] == "reconnecting" for s in _status(collector, settings)), 10)
        rec = next(s for s in _status(collector, settings) if s["state"] == "reconnecting")
        assert "not found" in rec["reason"]
        shutil.copy(cut_clip(tmp_path / "again.mp4", 0, 6), clip)
        assert collector.wait_for(lambda: _status(collector, settings)[-1]["state"] == "online", 15)
    finally:
        bg.finish()


def test_truncated_file_fails_cleanly(
    edge_settings: Callable[..., Settings],
    collector_for: Callable[..., Collector],
    short_clip: Path,
    tmp_path: Path,
) -> None:
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(short_clip.read_bytes()[: short_clip.stat().st_size // 2])
    settings = edge_settings([{"id": "cam-1", "source": str(bad), "reopen_attempts": 2}], final_ack_wait_s=0.5)
    collector = collector_for(settings)
    summary = run_edge(settings, threading.Event())
    assert summary.events == 0
    assert collector.wait_for(lambda: any(s["state"] == "failed" for s in _status(collector, settings)))


def test_network_stream_that_stops_is_reopened(
    edge_settings: Callable[..., Settings], collector_for: Callable[..., Collector]
) -> None:
    """A live HTTP (MJPEG) camera: frames become events; the stream dies -> reconnecting; it
    comes back -> online and detecting again, with no restart of the node."""
    camera = MjpegCamera(free_port()).start()
    settings = edge_settings([{"id": "cam-1", "source": camera.url, "detect_fps": 2.0}])
    collector = collector_for(settings, ack=True)
    events_topic = Topics(settings.mqtt.topic_prefix).camera("s1", "cam-1", Kind.EVENTS)

    def max_seq() -> int:
        return max((json.loads(p)["seq"] for p in collector.payloads(events_topic)), default=-1)

    bg = Background(settings)
    try:
        assert collector.wait_for(lambda: any(s["state"] == "online" for s in _status(collector, settings)), 30)
        assert collector.wait_for(lambda: len(collector.payloads(events_topic)) >= 2, 40), "no events from the stream"
        camera.stop()
        assert collector.wait_for(
            lambda: any(s["state"] == "reconnecting" for s in _status(collector, settings)), 40
        ), "a dead stream must be reported"
        before = max_seq()
        camera.start()
        assert collector.wait_for(lambda: _status(collector, settings)[-1]["state"] == "online", 60)
        assert camera.clients >= 2, "the node opened the stream again"
        assert collector.wait_for(lambda: max_seq() > before, 40), "no new events after the stream came back"
    finally:
        bg.finish()
        camera.stop()
