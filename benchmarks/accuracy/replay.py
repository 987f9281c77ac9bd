"""Replays of the edge on the ground-truth frames: detections once, then trackers on them.

* :func:`detect_every_frame`: the detector on the full frame of every GT frame, persons kept down to
  a low score floor with their scores: the detection metrics, the every-frame tracking mode and the
  speed table (sub-sampled to a lower ``detect_fps``) are all computed from this one pass.
* :func:`replay_deployed`: the edge as deployed: :class:`~pipeline.edge_stage.capture.Capture`
  samples the file at ``detect_fps`` on its own clock, the motion gate skips still frames and
  narrows the detector to the moving region, the camera's ``min_score`` and labels filter, and the
  product's tracker runs; between sampled frames the tracker's predicted boxes stand for the
  track (what the edge would draw). The detections it fed its tracker are kept, so the reference
  trackers get exactly the same ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from benchmarks.accuracy.data import FRAME_H, FRAME_W, PxBox
from pipeline.edge_stage.appearance import box_feature
from pipeline.edge_stage.capture import Capture, Image
from pipeline.edge_stage.detectors.base import Detector
from pipeline.edge_stage.motion_gate import MotionGate, detection_roi_with_tracks
from pipeline.metrics import Registry
from pipeline.operators.appearance import Feature
from pipeline.operators.tracking import Detection, Track, Tracker
from pipeline.settings import CameraSettings

Scored = tuple[PxBox, float, Feature | None]  # pixel box, score, appearance
TrackRows = dict[int, list[tuple[int, PxBox]]]  # frame -> [(track id, box)]
SCORE_FLOOR = 0.1  # lowest score kept from the detector (ByteTrack-style low-score stage)


def to_px(box: Sequence[float], w: int = FRAME_W, h: int = FRAME_H) -> PxBox:
    return (box[0] * w, box[1] * h, box[2] * w, box[3] * h)


def to_norm(box: PxBox, w: int = FRAME_W, h: int = FRAME_H) -> tuple[float, float, float, float]:
    return (box[0] / w, box[1] / h, box[2] / w, box[3] / h)


@dataclass
class EveryFrame:
    """Full-frame person detections of frames ``0..n-1`` (score >= the detector's floor)."""

    detections: dict[int, list[Scored]]
    ms_per_frame: list[float]


def detect_every_frame(
    video: Path, n_frames: int, detector: Detector, progress: Callable[[str], object] = print
) -> EveryFrame:
    cap = cv2.VideoCapture(str(video))
    dets: dict[int, list[Scored]] = {}
    ms: list[float] = []
    try:
        for i in range(n_frames):
            ok, img = cap.read()
            if not ok:
                break
            t0 = time.perf_counter()
            found = detector.detect(img, None)
            ms.append((time.perf_counter() - t0) * 1000.0)
            dets[i] = [
                (to_px(d.box), d.score, box_feature(img, d.box))
                for d in found
                if d.label == "person" and d.score >= SCORE_FLOOR
            ]
            if i % 100 == 99:
                progress(f"   {detector.tag}: {i + 1}/{n_frames} frames, {sum(ms) / len(ms):.0f} ms/frame")
    finally:
        cap.release()
    return EveryFrame(dets, ms)


def track_rows(tracks: Sequence[Track], label: str = "person") -> list[tuple[int, PxBox]]:
    return [(t.id, to_px(t.box)) for t in tracks if t.label == label]


@dataclass
class Deployed:
    """The edge's view of the GT frames at ``detect_fps``."""

    fps: float  # the file's declared rate
    detect_fps: float
    sampled: list[int]  # frame indices the capture took
    fed: dict[int, list[Scored]]  # person detections the tracker got (sampled frames; gated: none)
    gated: set[int]  # sampled frames the motion gate skipped
    live: TrackRows  # confirmed tracks matched at that step (sampled frames)
    every: TrackRows  # + predicted boxes between sampled frames (every frame)
    roi_frames: int = 0
    detector_ms: list[float] = field(default_factory=list)


def replay_deployed(
    video: Path,
    n_frames: int,
    detector: Detector,
    camera: CameraSettings,
    make_tracker: Callable[[], Tracker],
    prepare: Callable[[Image, list[Detection], CameraSettings], list[Detection]],
) -> Deployed:
    """One pass of the edge's per-frame step over ``video``'s first ``n_frames`` frames."""
    stop = threading.Event()
    cap = Capture(
        "bench",
        str(video),
        detect_fps=lambda: camera.detect_fps,
        loop=False,
        realtime=False,
        stop=stop,
        metrics=Registry("bench"),
        clock=lambda: 0.0,
    )
    probe = cv2.VideoCapture(str(video))
    fps = probe.get(cv2.CAP_PROP_FPS) or 10.0
    probe.release()
    gate = MotionGate(camera.motion_threshold, camera.masks)
    tracker = make_tracker()
    out = Deployed(fps, camera.detect_fps, [], {}, set(), {}, {})
    prev: int | None = None
    try:
        while (frame := cap.next()) is not None and frame.index < n_frames:
            i, t = frame.index, round(frame.pos_ms)
            if prev is not None:  # frames the capture skipped: the tracker's prediction stands in
                for j in range(prev + 1, i):
                    t_j = round(j * 1000.0 / fps)
                    out.every[j] = track_rows([x for x in tracker.predicted(t_j) if x.missed == 0])
            out.sampled.append(i)
            motion = gate.check(frame.image)
            if not motion.motion:
                out.gated.add(i)
                tracker.predict_only(t)
            else:
                h, w = frame.image.shape[:2]
                roi = detection_roi_with_tracks(motion.regions, (w, h), (x.box for x in tracker.tracks))
                out.roi_frames += roi is not None
                t0 = time.perf_counter()
                raw = detector.detect(frame.image, roi)
                out.detector_ms.append((time.perf_counter() - t0) * 1000.0)
                dets = prepare(frame.image, raw, camera)
                out.fed[i] = [(to_px(d.box), d.score, d.feature) for d in dets if d.label == "person"]
                tracker.update(dets, t)
            rows = track_rows([x for x in tracker.tracks if x.missed == 0])
            out.live[i] = out.every[i] = rows
            prev = i
    finally:
        cap.close()
    return out


def replay_tracker(
    detections: dict[int, list[Scored]],
    frames: Sequence[int],
    fps: float,
    make_tracker: Callable[[], Tracker],
    select: Callable[[list[Detection], CameraSettings], list[Detection]],
    camera: CameraSettings,
) -> TrackRows:
    """The product's tracker on given person detections (every-frame mode, speed table)."""
    tracker = make_tracker()
    out: TrackRows = {}
    for i in frames:
        dets = select([Detection(to_norm(b), s, "person", f) for b, s, f in detections.get(i, [])], camera)
        tracker.update(dets, round(i * 1000.0 / fps))
        out[i] = track_rows([x for x in tracker.tracks if x.missed == 0])
    return out
