"""One camera of a node: its thread, its source, its live config, its model and its status.

The thread reads sampled frames from :class:`~pipeline.edge_stage.capture.Capture` and hands each
to the camera's :class:`~pipeline.edge_stage.frame_step.FrameStep` (gate -> detect -> track ->
emit [-> annotate]); between frames it publishes the retained camera status every
``edge.status_interval_s``. Live config (``on_config``) arrives on paho's network thread and is
read by the frame loop at the next frame; model swaps happen between two frames.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from pipeline.edge_stage.annotate import Annotator
from pipeline.edge_stage.capture import Capture, Opener, SourceState, open_cv
from pipeline.edge_stage.config_sync import Applied, Ignored, LiveCameraConfig
from pipeline.edge_stage.detectors import Detector, make_detector
from pipeline.edge_stage.events import EventBuilder
from pipeline.edge_stage.frame_step import (
    AnnotateStage,
    DetectStage,
    EmitStage,
    FrameStage,
    FrameStep,
    GateStage,
    TrackStage,
)
from pipeline.edge_stage.model_download import ModelStore
from pipeline.edge_stage.model_swap import CameraModels
from pipeline.edge_stage.outbox import Outbox
from pipeline.edge_stage.publisher import Publisher
from pipeline.edge_stage.snapshot import encode_snapshot
from pipeline.errors import PipelineError
from pipeline.metrics import Registry
from pipeline.operators.schema import Rejected
from pipeline.settings import CameraSettings, Settings
from pipeline.topics import Kind, Topics

log = logging.getLogger(__name__)


def _status_payload(
    site: str, cam: str, state: str, reason: str, model: str, metrics: dict[str, Any], node: str = ""
) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "site": site,
            "cam": cam,
            "node": node,  # the console shows a camera offline as soon as its node's Last Will says so
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
        topics = Topics(settings.mqtt.topic_prefix)
        self.events_topic = topics.camera(self.edge.site, self.cam, Kind.EVENTS)
        self.status_topic = topics.camera(self.edge.site, self.cam, Kind.STATUS)
        self.snapshot_topic = topics.camera(self.edge.site, self.cam, Kind.SNAPSHOT)
        self.opener = opener
        self.annotator = annotator
        self.state, self.reason = "starting", ""
        self.model = "none"
        self.capture: Capture | None = None
        self.step: FrameStep | None = None  # built when the thread starts
        self.step_emit: EmitStage | None = None  # its emit stage, which counts events per track
        self.thread = threading.Thread(target=self._run, name=f"camera-{self.cam}", daemon=True)
        self._status_lock = threading.Lock()
        self._next_status = 0.0
        self._next_snapshot = 0.0
        self._face_blur: Any = None  # MediaPipe face blur of snapshots, loaded when a camera asks
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
            "frames_corrupt": int(m.counter("frames_corrupt_total", cam=c)),
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
                self.edge.site,
                self.cam,
                self.state,
                self.reason,
                self.model,
                self._metrics_snapshot(),
                self.edge.node_id,
            )
            self._next_status = time.monotonic() + self.edge.status_interval_s
        self.publisher.publish_status(self.status_topic, payload)

    def _publish_snapshot(self, frame: Any, camera: CameraSettings) -> None:
        """A small retained JPEG for the console's zone editor (pipeline/edge_stage/snapshot.py)."""
        self._next_snapshot = time.monotonic() + self.edge.snapshot_interval_s
        blur = None
        if camera.blur_faces:
            if self._face_blur is None:
                from pipeline.edge_stage.detectors.mediapipe_extras import PersonExtras

                self._face_blur = PersonExtras()
            blur = self._face_blur.blur_faces
        jpeg = encode_snapshot(frame, self.edge.snapshot_max_bytes, blur)
        if jpeg is not None:
            self.publisher.publish_status(self.snapshot_topic, jpeg)
            self.metrics.inc("snapshots_total", help="Camera snapshots published.", cam=self.cam)

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

    @property
    def events_per_track(self) -> dict[int, int]:
        """Events stored per track id of this camera (for the summary)."""
        return dict(self.step_emit.events_per_track) if self.step_emit is not None else {}

    def _build_step(self, detector: Detector, camera: CameraSettings) -> FrameStep:
        m, c = self.metrics, self.cam
        builder = EventBuilder(self.edge.site, c, detector.tag)
        gate = GateStage(camera, m, c)
        track = TrackStage(self.edge, self.outbox, c, camera)
        self.step_emit = emit = EmitStage(self.edge, builder, self.outbox, self.events_topic, m, self.publisher.kick)

        def on_swap(new: Detector) -> None:
            builder.det = new.tag

        detect = DetectStage(self.models, detector, gate, track, m, c, on_swap)
        stages: list[FrameStage] = [gate, detect, track, emit]
        if self.annotator is not None:
            stages.append(AnnotateStage(self.annotator, track, c))
        return FrameStep(stages, m, c)

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
            self._loop(self._build_step(detector, camera), camera)
        finally:
            self.models.close()

    def _loop(self, step: FrameStep, camera: CameraSettings) -> None:
        self.step = step
        self.capture = cap = Capture(
            self.cam,
            camera.source,
            detect_fps=lambda: self.live.camera.detect_fps,
            loop=camera.loop,
            realtime=camera.realtime,
            stop=self.stop,
            metrics=self.metrics,
            on_state=self._on_source_state,
            opener=self.opener,
            reopen_attempts=camera.reopen_attempts,
            stream_timeout_s=camera.stream_timeout_s,
        )
        try:
            while (frame := cap.next()) is not None:
                step(frame.image, frame.ts_ms, self.live.camera)
                if time.monotonic() >= self._next_status:
                    self.publish_status()
                if self.edge.snapshot_interval_s and time.monotonic() >= self._next_snapshot:
                    self._publish_snapshot(frame.image, self.live.camera)
        finally:
            step.close(self.live.camera)
            cap.close()
