"""The per-frame step of a camera: gate -> detect -> track -> emit -> annotate, one small stage each.

A :class:`FrameStep` runs its stages in order on every sampled frame. Each stage reads and writes
one :class:`FrameState` (the frame, the live camera config, and what the stages before it found),
and says whether it did its work on this frame; the step times the stages that did, under the
stage's ``timer`` metric (``motion_gate_seconds``, ``detector_seconds``, ...), so the summary and
``/metrics`` show where a frame's time went without timing code in the loop. At the end of the
stream :meth:`FrameStep.close` hands every stage a last, empty frame: the tracker ends its live
tracks there and the emit stage stores their ``track_ended`` events.

To add a stage (e.g. line crossings after ``track``), write a class with ``name``, ``timer``,
``process`` and ``close`` and put it in the list :func:`pipeline.edge_stage.camera_worker`
builds. The tracker is built in one place, :func:`build_tracker`.

Stages run on the camera's own thread; none of them is thread-safe, none needs to be.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipeline.edge_stage.annotate import Annotator, draw
from pipeline.edge_stage.capture import Image
from pipeline.edge_stage.detectors import Detector
from pipeline.edge_stage.events import CropFilter, EventBuilder
from pipeline.edge_stage.motion_gate import MotionGate, PxBox, detection_roi_with_tracks
from pipeline.edge_stage.outbox import Outbox
from pipeline.edge_stage.tracking_setup import make_tracker, prepare_detections
from pipeline.metrics import Registry
from pipeline.operators.schema import encode_event
from pipeline.operators.track_events import TrackEventPolicy
from pipeline.operators.tracking import Detection, Tracker, TrackUpdate
from pipeline.settings import CameraSettings, EdgeSettings

if TYPE_CHECKING:
    from pipeline.edge_stage.model_swap import CameraModels


log = logging.getLogger(__name__)


@dataclass(slots=True)
class FrameState:
    """One sampled frame and what the stages found in it, in stage order."""

    image: Image
    ts_ms: int
    camera: CameraSettings  # the live config at this frame
    motion: bool = True  # gate: False = detector skipped
    roi: PxBox | None = None  # detect: the region it looked at (None: full frame)
    detections: list[Detection] = field(default_factory=list)  # detect: kept by score and label
    detector_tag: str = ""  # detect: name@version of the model that ran
    update: TrackUpdate = field(default_factory=TrackUpdate)  # track: what this step did
    events: int = 0  # emit: events stored in the outbox


class FrameStage(Protocol):
    @property
    def name(self) -> str:
        """The stage's key in ``EdgeSummary.stage_ms``."""
        ...

    @property
    def timer(self) -> str | None:
        """The metric its time goes to; None: not timed."""
        ...

    def process(self, frame: FrameState) -> bool:
        """Do this stage's work on ``frame``; False when it skipped it (the time is not recorded)."""
        ...

    def close(self, last: FrameState) -> None:
        """End of stream; ``last`` is an empty frame at the last frame's time."""
        ...


def build_tracker(edge: EdgeSettings, first_id: int = 1, camera: CameraSettings | None = None) -> Tracker:
    """The one place a camera's tracker is made from settings (ids continue from ``first_id``);
    :mod:`pipeline.edge_stage.tracking_setup` holds the settings -> tracker mapping, which the
    accuracy benchmark shares."""
    return make_tracker(edge, camera, first_id=first_id)


class GateStage:
    """Motion gate: a frame without motion skips the detector (and is counted as gated)."""

    name = "motion_gate"
    timer = "motion_gate_seconds"

    def __init__(self, camera: CameraSettings, metrics: Registry, cam: str) -> None:
        self.gate = MotionGate(camera.motion_threshold, camera.masks)
        self._camera, self.metrics, self.cam = camera, metrics, cam
        self.regions: list[PxBox] = []  # the motion regions of the last frame (pixel boxes)

    def process(self, frame: FrameState) -> bool:
        if frame.camera is not self._camera:  # a live config update
            self.gate.reconfigure(frame.camera.motion_threshold, frame.camera.masks)
            self._camera = frame.camera
        result = self.gate.check(frame.image)
        frame.motion = result.motion
        self.regions = result.regions
        if not result.motion:
            self.metrics.inc(
                "frames_gated_total", help="Sampled frames without motion (detector skipped).", cam=self.cam
            )
        return True

    def close(self, last: FrameState) -> None:
        return None


class TrackStage:
    """The tracker: detections to tracks (or a prediction on gated frames); persists its next id,
    and a snapshot of its tracks when one starts or ends and about once a second (frame time), so
    a node that crashed or was killed takes its people back under the same ids when it restarts (they come back as lost
    tracks, re-identified by their next detection within ``edge.track_lost_s``). A stream that
    ends cleanly ends its tracks (``track_ended``) and clears the snapshot.

    Timed only on frames with detections: a predict-only step costs microseconds and would pull
    ``tracker_seconds``' p50 towards zero."""

    name = "tracker"
    timer = "tracker_seconds"

    def __init__(self, edge: EdgeSettings, outbox: Outbox, cam: str, camera: CameraSettings | None = None) -> None:
        self.edge, self.outbox = edge, outbox
        self._id_key = f"next_track_id:{cam}"
        self._snapshot_key = f"tracker:{cam}"
        self._next_snapshot_ms: int | None = None
        self.tracker = build_tracker(edge, first_id=outbox.get_state(self._id_key, 1), camera=camera)
        saved = outbox.get_text(self._snapshot_key)
        if saved is not None:
            try:
                restored = self.tracker.restore_state(json.loads(saved))
                log.info("camera %s: %d tracks taken back from before the restart", cam, restored)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                log.warning("camera %s: tracker snapshot ignored: %s", cam, exc)

    def process(self, frame: FrameState) -> bool:
        if not frame.motion:
            frame.update = self.tracker.predict_only(frame.ts_ms)
            return False
        frame.update = self.tracker.update(frame.detections, frame.ts_ms)
        if frame.update.started:  # ids stay unique across restarts
            self.outbox.set_state(self._id_key, self.tracker.next_id)
        changed = frame.update.started or frame.update.ended
        if changed or self._next_snapshot_ms is None or frame.ts_ms >= self._next_snapshot_ms:
            self.outbox.set_text(self._snapshot_key, json.dumps(self.tracker.export_state(), separators=(",", ":")))
            self._next_snapshot_ms = frame.ts_ms + 1000
        return True

    def close(self, last: FrameState) -> None:
        last.update = self.tracker.end_all(last.ts_ms)
        self.outbox.set_state(self._id_key, self.tracker.next_id)
        self.outbox.set_text(self._snapshot_key, None)


class DetectStage:
    """The detector on the motion region (plus live tracks), filtered by the camera's score and
    labels. Swaps in a newly downloaded model between two frames and rolls a failing one back."""

    name = "detector"
    timer = "detector_seconds"

    def __init__(
        self,
        models: CameraModels,
        detector: Detector,
        gate: GateStage,
        track: TrackStage,
        metrics: Registry,
        cam: str,
        on_swap: Callable[[Detector], None],
    ) -> None:
        self.models, self.detector = models, detector
        self.gate, self.track = gate, track
        self.metrics, self.cam = metrics, cam
        self.on_swap = on_swap

    def _use(self, detector: Detector) -> None:
        self.detector = detector
        self.on_swap(detector)

    def process(self, frame: FrameState) -> bool:
        self.models.last_frame = frame.image  # the smoke test of the next model runs on it
        if (swapped := self.models.poll()) is not None:  # between two frames
            self._use(swapped)
        frame.detector_tag = self.detector.tag
        if not frame.motion:
            return False
        m, c, img = self.metrics, self.cam, frame.image
        h, w = img.shape[:2]
        frame.roi = detection_roi_with_tracks(self.gate.regions, (w, h), (t.box for t in self.track.tracker.tracks))
        try:
            dets = self.detector.detect(img, frame.roi)
            self.models.on_success()
        except Exception as exc:  # re-raised unless a downloaded model can be rolled back
            restored = self.models.on_error(exc)
            m.inc("detector_errors_total", help="Inference errors of the detector.", cam=c)
            dets = []
            if restored is not None:
                self._use(restored)
        m.inc("frames_detected_total", help="Detector runs.", cam=c)
        if frame.roi is not None:
            m.inc("frames_roi_total", help="Detector runs on a motion region only.", cam=c)
        # score and labels filter, plus the appearance features the tracker re-identifies with
        frame.detections = prepare_detections(img, dets, frame.camera, self.track.edge)
        m.inc("detections_total", len(frame.detections), help="Detections kept (score, labels).", cam=c)
        return True

    def close(self, last: FrameState) -> None:
        return None


class EmitStage:
    """The track event policy's decisions become events in the outbox (crops, blurred faces and
    pose attributes on ``track_started`` as the camera's config asks); wakes the publisher."""

    name = "events_outbox"
    timer = "events_seconds"

    def __init__(
        self,
        edge: EdgeSettings,
        builder: EventBuilder,
        outbox: Outbox,
        topic: str,
        metrics: Registry,
        kick: Callable[[], None],
    ) -> None:
        self.policy = TrackEventPolicy(keepalive_ms=int(edge.keepalive_event_s * 1000))
        self._shapes_of: CameraSettings | None = None  # the camera config the policy's lines and zones came from
        self.builder, self.outbox, self.topic = builder, outbox, topic
        self.metrics, self.cam = metrics, builder.cam
        self.kick = kick
        self.events_per_track: Counter[int] = Counter()
        self._extras: Any = None

    def _extras_for(self, camera: CameraSettings) -> Any:
        if (camera.blur_faces or camera.pose) and self._extras is None:
            from pipeline.edge_stage.detectors.mediapipe_extras import PersonExtras

            self._extras = PersonExtras()
        return self._extras

    def process(self, frame: FrameState) -> bool:
        camera = frame.camera
        if camera is not self._shapes_of:  # first frame or a live config update
            # the camera's own lines plus those of its line rules (drawn in the console)
            rule_lines = [r.line for r in camera.rules if r.kind == "line" and r.line is not None]
            rule_zones = [r.zone for r in camera.rules if r.kind in ("zone", "dwell") and r.zone is not None]
            self.policy.lines, self.policy.line_margin = (*camera.lines, *rule_lines), camera.line_margin
            self.policy.zones = (*camera.zones, *rule_zones)
            self.policy.crop_refreshes = camera.crop_refreshes
            self._shapes_of = camera
        for etype, track, with_crop in self.policy.decide(frame.update, frame.ts_ms):
            crop_filter: CropFilter | None = None
            attrs: dict[str, str | float | int | bool] = {}
            extras = self._extras_for(camera) if with_crop else None
            if extras is not None and camera.blur_faces:
                crop_filter = extras.blur_faces
            if etype == "track_started":
                if track.link is not None:  # the track it probably continues (cloud: same person)
                    attrs["link"] = track.link
                if extras is not None and camera.pose and track.label == "person":
                    attrs.update(extras.pose_attrs(frame.image, track.box))
            elif with_crop:
                attrs["view"] = "better"  # a later, clearer crop of the track: the cloud re-judges it
            event = self.builder.build(
                etype,
                track,
                frame.ts_ms,
                with_crop=with_crop,
                frame_bgr=frame.image,
                crop_max_bytes=camera.crop_max_bytes if camera.crops else None,
                crop_filter=crop_filter,
                attrs=attrs,
            )
            stored = self.outbox.append(event, self.topic)
            if stored.crop is None:
                self.metrics.observe("event_bytes", len(encode_event(stored)), cam=self.cam)
            self.metrics.inc("events_total", help="Events stored in the outbox.", cam=self.cam, type=etype)
            self.events_per_track[track.id] += 1
            frame.events += 1
        if frame.events:
            self.kick()
        return True

    def close(self, last: FrameState) -> None:
        self.process(last)


class AnnotateStage:
    """Draws the confirmed tracks, the detector's region and the gate's verdict for ``--annotate``."""

    name = "annotate"
    timer = None

    def __init__(self, annotator: Annotator, track: TrackStage, cam: str) -> None:
        self.annotator, self.track, self.cam = annotator, track, cam

    def process(self, frame: FrameState) -> bool:
        caption = f"{self.cam} {frame.detector_tag}"
        image = draw(frame.image, self.track.tracker.tracks, roi=frame.roi, gated=not frame.motion, caption=caption)
        self.annotator.write(image)
        return True

    def close(self, last: FrameState) -> None:
        self.annotator.close()


class FrameStep:
    """Runs the stages on each frame in order and times each one that did its work."""

    def __init__(self, stages: Sequence[FrameStage], metrics: Registry, cam: str) -> None:
        self.stages, self.metrics, self.cam = list(stages), metrics, cam
        self.last_ts_ms = 0

    def __call__(self, image: Image, ts_ms: int, camera: CameraSettings) -> FrameState:
        self.metrics.inc("frames_sampled_total", help="Frames taken at detect_fps.", cam=self.cam)
        self.last_ts_ms = ts_ms
        frame = FrameState(image, ts_ms, camera)
        for stage in self.stages:
            t0 = time.perf_counter()
            if stage.process(frame) and stage.timer is not None:
                self.metrics.observe(stage.timer, time.perf_counter() - t0, cam=self.cam)
        return frame

    def close(self, camera: CameraSettings) -> None:
        """End of stream: every stage in order sees an empty frame at the last frame's time."""
        last = FrameState(np.zeros((1, 1, 3), np.uint8), self.last_ts_ms, camera, motion=False)
        for stage in self.stages:
            stage.close(last)

    @property
    def timers(self) -> dict[str, str]:
        """Stage name -> timer metric, for the summary."""
        return {s.name: s.timer for s in self.stages if s.timer is not None}
