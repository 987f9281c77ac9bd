"""Wires a node's cameras: capture -> motion gate -> detector -> tracker -> events -> outbox,
and one publisher (MQTT) for the node. :func:`run_edge` is the entry point of ``pipeline edge``,
the demo and the tests.

One thread per camera (each with its own detector instance: TFLite interpreters are not
thread-safe), one publisher thread, paho's network thread. ``run_edge`` returns when every camera
has ended (file sources without ``loop``) and the outbox is acknowledged (or
``edge.final_ack_wait_s`` passed), or as soon as ``stop`` is set.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.edge_stage.annotate import Annotator, draw
from pipeline.edge_stage.capture import Capture, Image, Opener, SourceState, open_cv
from pipeline.edge_stage.config_sync import Applied, Ignored, LiveCameraConfig
from pipeline.edge_stage.detectors import Detector, make_detector
from pipeline.edge_stage.events import CropFilter, EventBuilder
from pipeline.edge_stage.model_download import ModelStore
from pipeline.edge_stage.model_swap import CameraModels
from pipeline.edge_stage.motion_gate import MotionGate, detection_roi
from pipeline.edge_stage.outbox import Outbox
from pipeline.edge_stage.publisher import Publisher
from pipeline.edge_stage.tracking_setup import make_tracker, prepare_detections
from pipeline.errors import PipelineError
from pipeline.metrics import Registry, serve_http
from pipeline.operators.schema import Rejected, encode_event
from pipeline.operators.track_events import TrackEventPolicy
from pipeline.operators.tracking import TrackUpdate
from pipeline.settings import CameraSettings, Settings
from pipeline.topics import Kind, Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EdgeProgress:
    elapsed_s: float
    frames_read: int
    frames_detected: int
    events: int  # stored in the outbox
    events_published: int  # PUBACKed by the broker
    outbox_depth: int  # stored, not yet acknowledged by the bridge
    connected: bool
    cameras_running: int

    def line(self) -> str:
        return (
            f"[edge {self.elapsed_s:6.1f}s] frames={self.frames_read} detected={self.frames_detected}"
            f" events={self.events} published={self.events_published} outbox={self.outbox_depth}"
            f" mqtt={'up' if self.connected else 'down'} cameras={self.cameras_running}"
        )


@dataclass(frozen=True, slots=True)
class EdgeSummary:
    elapsed_s: float
    frames_read: int  # decoded from the sources
    frames_sampled: int  # taken at detect_fps
    frames_gated: int  # sampled frames without motion: detector skipped
    frames_detected: int  # detector runs
    frames_corrupt: int
    frames_dropped: int  # live sources: overwritten before they were taken
    detections: int  # detector outputs kept (score and label filters)
    events: int  # stored in the outbox
    events_published: int  # PUBACKed
    bytes_published: int
    video_bytes_read: int  # file size share of the frames read (what the edge keeps off the network)
    outbox_depth: int  # left unacknowledged at exit
    tracks: int
    events_per_track: float
    events_by_type: dict[str, int] = field(default_factory=dict)
    median_event_bytes: float | None = None  # events without a crop
    stage_ms: dict[str, float] = field(default_factory=dict)  # p50 per stage
    camera_states: dict[str, str] = field(default_factory=dict)

    @property
    def gated_share(self) -> float:
        return self.frames_gated / self.frames_sampled if self.frames_sampled else 0.0


def _status_payload(site: str, cam: str, state: str, reason: str, model: str, metrics: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "site": site,
            "cam": cam,
            "state": state,
            "reason": reason,
            "model": model,
            "metrics": metrics,
            "ts": int(time.time() * 1000),
        },
        separators=(",", ":"),
    ).encode()


class CameraWorker:
    """One camera's thread: from frames to stored events."""

    def __init__(
        self,
        settings: Settings,
        camera: CameraSettings,
        outbox: Outbox,
        publisher: Publisher,
        metrics: Registry,
        stop: threading.Event,
        *,
        opener: Opener = open_cv,
        annotator: Annotator | None = None,
        store: ModelStore | None = None,
    ) -> None:
        self.settings, self.edge = settings, settings.edge
        self.cam = camera.id
        self.live = LiveCameraConfig(self.edge.site, camera)
        self.outbox, self.publisher, self.metrics = outbox, publisher, metrics
        self.stop = stop
        self.topics = Topics(settings.mqtt.topic_prefix)
        self.events_topic = self.topics.camera(self.edge.site, self.cam, Kind.EVENTS)
        self.status_topic = self.topics.camera(self.edge.site, self.cam, Kind.STATUS)
        self.opener = opener
        self.annotator = annotator
        self.state, self.reason = "starting", ""
        self.model = "none"
        self.capture: Capture | None = None
        self.events_per_track: Counter[int] = Counter()
        self.thread = threading.Thread(target=self._run, name=f"camera-{self.cam}", daemon=True)
        self._status_lock = threading.Lock()
        self._next_status = 0.0
        self._extras: Any = None
        self.models = CameraModels(
            self.cam, self.edge, store or ModelStore(self.edge, stop, mqtt=settings.mqtt),
            lambda: make_detector(self.edge), self._on_model_report,
        )  # fmt: skip

    # ------------------------------------------------------------------ status

    def _metrics_snapshot(self) -> dict[str, Any]:
        m, c = self.metrics, self.cam
        det = m.quantile("detector_seconds", 0.5, cam=c)
        return {
            "frames_read": int(m.counter("frames_read_total", cam=c)),
            "frames_gated": int(m.counter("frames_gated_total", cam=c)),
            "frames_detected": int(m.counter("frames_detected_total", cam=c)),
            "frames_corrupt": int(
                sum(v for k, v in m.snapshot().items() if k.startswith("frames_corrupt_total") and f'cam="{c}"' in k)
            ),
            "frames_dropped": int(m.counter("frames_dropped_total", cam=c)),
            "events": int(m.counter("events_total", cam=c)),
            "outbox_depth": self.outbox.depth(),
            "detector_ms_p50": round(det * 1000, 2) if det is not None else None,
            "config_rev": self.live.rev,
            "config_rejected": int(m.counter("config_rejected_total", cam=c)),
            **self.models.snapshot(),
        }

    def publish_status(self, state: str | None = None, reason: str | None = None) -> None:
        with self._status_lock:
            if state is not None:
                self.state = state
            if reason is not None:
                self.reason = reason
            payload = _status_payload(
                self.edge.site, self.cam, self.state, self.reason, self.model, self._metrics_snapshot()
            )
            self._next_status = time.monotonic() + self.edge.status_interval_s
        self.publisher.publish_status(self.status_topic, payload)

    def _on_model_report(self, outcome: str, reason: str, new_tag: str | None) -> None:
        if new_tag is not None:
            self.model = new_tag
        self.metrics.inc("model_updates_total", help="Model swaps, rejections and rollbacks.", cam=self.cam,
                         outcome=outcome)  # fmt: skip
        self.publish_status(reason=reason)

    def _on_source_state(self, s: SourceState) -> None:
        log.info("camera %s: %s %s", self.cam, s.state, s.reason)
        # the wire knows online|reconnecting|failed|offline: a file that ended is offline
        self.publish_status("offline" if s.state == "ended" else s.state, s.reason)

    def on_config(self, raw: bytes) -> None:
        result = self.live.offer(raw)
        if isinstance(result, Applied):
            log.info("camera %s: config rev %d applied (%s)", self.cam, result.rev, ", ".join(result.changed))
            self.metrics.inc("config_applied_total", help="Camera config updates applied live.", cam=self.cam)
            self.publish_status(reason=f"config rev {result.rev} applied")
            if "model" in result.changed:
                self.models.request(result.camera.model)
        elif isinstance(result, Rejected):
            log.warning("camera %s: config rejected: %s %s", self.cam, result.reason, result.detail)
            self.metrics.inc("config_rejected_total", help="Invalid camera config updates.", cam=self.cam)
            self.publish_status(reason=f"config rejected: {result.reason}: {result.detail}")
        elif isinstance(result, Ignored):
            log.debug("camera %s: config ignored: %s", self.cam, result.reason)

    # ------------------------------------------------------------------ work

    def _extras_for(self, camera: CameraSettings) -> Any:
        if (camera.blur_faces or camera.pose) and self._extras is None:
            from pipeline.edge_stage.detectors.mediapipe_extras import PersonExtras

            self._extras = PersonExtras()
        return self._extras

    def _emit(
        self,
        update: TrackUpdate,
        policy: TrackEventPolicy,
        builder: EventBuilder,
        frame: Image,
        ts_ms: int,
        camera: CameraSettings,
    ) -> int:
        n = 0
        for etype, track in policy.decide(update, ts_ms):
            crop_filter: CropFilter | None = None
            attrs: dict[str, str | float | int | bool] = {}
            if etype == "track_started":
                extras = self._extras_for(camera)
                if extras is not None and camera.blur_faces:
                    crop_filter = extras.blur_faces
                if extras is not None and camera.pose and track.label == "person":
                    attrs.update(extras.pose_attrs(frame, track.box))
            event = builder.build(
                etype,
                track,
                ts_ms,
                frame_bgr=frame,
                crop_max_bytes=camera.crop_max_bytes if camera.crops else None,
                crop_filter=crop_filter,
                attrs=attrs,
            )
            stored = self.outbox.append(event, self.events_topic)
            if stored.crop is None:
                self.metrics.observe("event_bytes", len(encode_event(stored)), cam=self.cam)
            self.metrics.inc("events_total", help="Events stored in the outbox.", cam=self.cam, type=etype)
            self.events_per_track[track.id] += 1
            n += 1
        if n:
            self.publisher.kick()
        return n

    def _run(self) -> None:
        try:
            self._work()
        except PipelineError as exc:
            log.error("camera %s failed: %s", self.cam, exc)  # noqa: TRY400 (expected failure, no trace)
            self.publish_status("failed", str(exc))
        except Exception as exc:
            log.exception("camera %s crashed", self.cam)
            self.publish_status("failed", f"internal error: {exc!r:.200}")

    def _work(self) -> None:
        camera = self.live.camera
        detector: Detector = self.models.start(make_detector(self.edge))
        self.model = detector.tag
        if camera.model is not None:  # from the settings file; live changes come through on_config
            self.models.request(camera.model)
        try:
            self._loop(detector, camera)
        finally:
            self.models.close()

    def _loop(self, detector: Detector, camera: CameraSettings) -> None:
        m, c = self.metrics, self.cam
        gate = MotionGate(camera.motion_threshold, camera.masks)
        id_key = f"next_track_id:{c}"
        tracker = make_tracker(self.edge, camera, first_id=self.outbox.get_state(id_key, 1))
        policy = TrackEventPolicy(keepalive_ms=int(self.edge.keepalive_event_s * 1000))
        builder = EventBuilder(self.edge.site, c, detector.tag)
        self.capture = cap = Capture(
            c,
            camera.source,
            detect_fps=lambda: self.live.camera.detect_fps,
            loop=camera.loop,
            realtime=camera.realtime,
            stop=self.stop,
            metrics=m,
            on_state=self._on_source_state,
            opener=self.opener,
            reopen_attempts=camera.reopen_attempts,
            stream_timeout_s=camera.stream_timeout_s,
        )
        last_ts = 0
        try:
            while (frame := cap.next()) is not None:
                cur = self.live.camera
                if cur is not camera:
                    gate.reconfigure(cur.motion_threshold, cur.masks)
                    camera = cur
                m.inc("frames_sampled_total", help="Frames taken at detect_fps.", cam=c)
                img, ts = frame.image, frame.ts_ms
                self.models.last_frame = img  # the smoke test of the next model runs on it
                if (swapped := self.models.poll()) is not None:  # between two frames
                    detector = swapped
                    builder.det = detector.tag
                last_ts = ts
                t0 = time.perf_counter()
                motion = gate.check(img)
                t1 = time.perf_counter()
                m.observe("motion_gate_seconds", t1 - t0, cam=c)
                roi = None
                if not motion.motion:
                    m.inc("frames_gated_total", help="Sampled frames without motion (detector skipped).", cam=c)
                    update = tracker.predict_only(ts)
                else:
                    h, w = img.shape[:2]
                    track_px = [
                        (int(t.box[0] * w), int(t.box[1] * h), int(t.box[2] * w), int(t.box[3] * h))
                        for t in tracker.tracks
                    ]
                    roi = detection_roi(motion.regions, (w, h), track_boxes=track_px)
                    try:
                        dets = detector.detect(img, roi)
                        self.models.on_success()
                    except Exception as exc:  # re-raised unless a downloaded model can be rolled back
                        restored = self.models.on_error(exc)
                        m.inc("detector_errors_total", help="Inference errors of the detector.", cam=c)
                        dets = []
                        if restored is not None:
                            detector = restored
                            builder.det = detector.tag
                    t2 = time.perf_counter()
                    m.observe("detector_seconds", t2 - t1, cam=c)
                    m.inc("frames_detected_total", help="Detector runs.", cam=c)
                    if roi is not None:
                        m.inc("frames_roi_total", help="Detector runs on a motion region only.", cam=c)
                    dets = prepare_detections(img, dets, camera, self.edge)
                    m.inc("detections_total", len(dets), help="Detections kept (score, labels).", cam=c)
                    update = tracker.update(dets, ts)
                    m.observe("tracker_seconds", time.perf_counter() - t2, cam=c)
                t3 = time.perf_counter()
                if self._emit(update, policy, builder, img, ts, camera) and update.started:
                    self.outbox.set_state(id_key, tracker.next_id)
                m.observe("events_seconds", time.perf_counter() - t3, cam=c)
                if self.annotator is not None:
                    self.annotator.write(
                        draw(img, tracker.tracks, roi=roi, gated=not motion.motion, caption=f"{c} {detector.tag}")
                    )
                if time.monotonic() >= self._next_status:
                    self.publish_status()
        finally:
            self._emit(tracker.end_all(last_ts), policy, builder, np.zeros((1, 1, 3), np.uint8), last_ts, camera)
            self.outbox.set_state(id_key, tracker.next_id)
            cap.close()
            if self.annotator is not None:
                self.annotator.close()


def _total(m: Registry, name: str) -> int:
    return int(m.counter(name))


def _quantile_ms(m: Registry, name: str) -> float | None:
    v = m.quantile(name, 0.5)
    return None if v is None else round(v * 1000, 2)


def run_edge(
    settings: Settings,
    stop: threading.Event,
    progress: Callable[[EdgeProgress], None] | None = None,
    *,
    annotate: Path | None = None,
    snapshot: Path | None = None,
    opener: Opener = open_cv,
    metrics: Registry | None = None,
) -> EdgeSummary:
    """Run every camera of ``settings.edge`` until they end (and the outbox is acked) or ``stop``."""
    edge = settings.edge
    m = metrics or Registry("edge")
    started = time.monotonic()
    outbox = Outbox(edge.outbox_path, max_events=edge.outbox_max_events, max_age_s=edge.outbox_max_age_s, metrics=m)
    workers: dict[str, CameraWorker] = {}

    def on_config(cam: str, raw: bytes) -> None:
        w = workers.get(cam)
        if w is not None:
            w.on_config(raw)

    publisher = Publisher(settings, outbox, m, on_config=on_config)
    store = ModelStore(edge, stop, mqtt=settings.mqtt)
    http = serve_http(m, edge.metrics_port) if edge.metrics_port else None
    for i, camera in enumerate(edge.cameras):
        ann = None
        if (annotate or snapshot) and i == 0:
            ann = Annotator(annotate, camera.detect_fps, snapshot)
        workers[camera.id] = CameraWorker(
            settings, camera, outbox, publisher, m, stop, opener=opener, annotator=ann, store=store
        )

    def report() -> None:
        if progress is not None:
            progress(
                EdgeProgress(
                    elapsed_s=time.monotonic() - started,
                    frames_read=_total(m, "frames_read_total"),
                    frames_detected=_total(m, "frames_detected_total"),
                    events=_total(m, "events_total"),
                    events_published=publisher.events_published,
                    outbox_depth=outbox.depth(),
                    connected=publisher.connected,
                    cameras_running=sum(w.thread.is_alive() for w in workers.values()),
                )
            )

    try:
        publisher.start()
        for w in workers.values():
            w.thread.start()
        while not stop.is_set() and any(w.thread.is_alive() for w in workers.values()):
            stop.wait(1.0)
            report()
        deadline = time.monotonic() + edge.final_ack_wait_s
        next_report = time.monotonic() + 1.0
        while not stop.is_set() and outbox.depth() > 0 and time.monotonic() < deadline:
            stop.wait(0.1)
            if time.monotonic() >= next_report:
                report()
                next_report += 1.0
        for w in workers.values():
            w.thread.join(timeout=10)
        report()
    finally:
        stop_flush = time.monotonic() + 2.0
        while publisher.connected and not publisher.drained() and time.monotonic() < stop_flush:
            time.sleep(0.05)
        for w in workers.values():
            if not w.thread.is_alive() and w.state != "failed":
                w.publish_status("offline", "edge stopped" if stop.is_set() else w.reason)
        publisher.stop()
        if http is not None:
            http.shutdown()
            http.server_close()
        depth = outbox.depth()
        outbox.close()

    per_track: Counter[tuple[str, int]] = Counter()
    for w in workers.values():
        for tid, n in w.events_per_track.items():
            per_track[(w.cam, tid)] += n
    by_type = {
        t: sum(int(m.counter("events_total", cam=w.cam, type=t)) for w in workers.values())
        for t in ("track_started", "track_updated", "track_ended")
    }
    sizes = m.quantile("event_bytes", 0.5)
    snapshot_all = m.snapshot()
    return EdgeSummary(
        elapsed_s=round(time.monotonic() - started, 2),
        frames_read=_total(m, "frames_read_total"),
        frames_sampled=_total(m, "frames_sampled_total"),
        frames_gated=_total(m, "frames_gated_total"),
        frames_detected=_total(m, "frames_detected_total"),
        frames_corrupt=int(sum(v for k, v in snapshot_all.items() if k.startswith("frames_corrupt_total"))),
        frames_dropped=_total(m, "frames_dropped_total"),
        detections=_total(m, "detections_total"),
        events=_total(m, "events_total"),
        events_published=publisher.events_published,
        bytes_published=publisher.bytes_published,
        video_bytes_read=sum(w.capture.bytes_read for w in workers.values() if w.capture is not None),
        outbox_depth=depth,
        tracks=len(per_track),
        events_per_track=round(statistics.fmean(per_track.values()), 2) if per_track else 0.0,
        events_by_type=by_type,
        median_event_bytes=sizes,
        stage_ms={
            k: v
            for k, v in (
                ("motion_gate", _quantile_ms(m, "motion_gate_seconds")),
                ("detector", _quantile_ms(m, "detector_seconds")),
                ("tracker", _quantile_ms(m, "tracker_seconds")),
                ("events_outbox", _quantile_ms(m, "events_seconds")),
            )
            if v is not None
        },
        camera_states={w.cam: w.state for w in workers.values()},
    )
