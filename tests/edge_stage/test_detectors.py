"""Detectors on real sample-clip frames, and the tracker keeping ids across frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.edge_stage.detectors.base import Detector
from pipeline.edge_stage.detectors.hog import HogPersonDetector
from pipeline.edge_stage.detectors.mediapipe_extras import FaceDetector, PersonExtras
from pipeline.operators.tracking import Tracker, iou
from tests.edge_stage.edge_helpers import clip_frames, detect_in_threads, needs_centernet, needs_clip

pytestmark = [pytest.mark.unit, needs_clip]


def _centernet(variant: str = "fp32") -> Detector:
    from pipeline.edge_stage.detectors.tflite_centernet import CenterNetDetector

    return CenterNetDetector.from_package(variant, num_threads=2, min_score=0.3)


@needs_centernet
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_centernet_finds_people_and_tracks_keep_ids(variant: str) -> None:
    det = _centernet(variant)
    assert det.input_size == (512, 512) and "person" in det.labels and "@" in det.tag
    tracker = Tracker(max_missed=3)
    ids_per_frame = []
    for i, frame in enumerate(clip_frames(0, 10)):
        people = [d for d in det.detect(frame) if d.label == "person"]
        assert people, f"frame {i}: the clip shows walking people"
        assert all(0 <= c <= 1 for d in people for c in d.box)
        tracker.update(people, i * 200)
        ids_per_frame.append({t.id for t in tracker.tracks})
    stable = set.intersection(*ids_per_frame[2:])
    assert stable, f"some track ids persist over consecutive frames: {ids_per_frame}"


@needs_centernet
def test_centernet_on_roi_maps_boxes_to_full_frame() -> None:
    det = _centernet()
    frame = clip_frames(0, 1)[0]
    full = [d for d in det.detect(frame) if d.label == "person"]
    best = max(full, key=lambda d: d.score)
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = best.box
    roi = (max(0, int(x1 * w) - 60), max(0, int(y1 * h) - 60), min(w, int(x2 * w) + 60), min(h, int(y2 * h) + 60))
    part = [d for d in det.detect(frame, roi) if d.label == "person"]
    assert any(abs(d.box[0] - x1) < 0.05 and abs(d.box[3] - y2) < 0.05 for d in part)


def test_hog_finds_a_person() -> None:
    det = HogPersonDetector(min_score=0.5)
    found = sum(len(det.detect(f)) for f in clip_frames(0, 3, step=5))
    assert found > 0


def test_face_blur_and_pose_run_on_bundled_models() -> None:
    face = FaceDetector()
    blank = np.full((200, 150, 3), 128, np.uint8)
    assert face.detect(blank) == []
    extras = PersonExtras()
    frame = clip_frames(0, 1)[0]
    out = extras.blur_faces(frame[100:400, 300:500])
    assert out.shape == (300, 200, 3)
    attrs = extras.pose_attrs(frame, (0.3, 0.1, 0.6, 0.9))
    assert attrs in ({}, {"pose": "up"}, {"pose": "down"})
    lying = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
    assert extras.pose_attrs(lying, (0.0, 0.0, 1.0, 1.0)) in ({}, {"pose": "down"}, {"pose": "up"})


@needs_centernet
@pytest.mark.parametrize("size", [384, 320])
def test_resized_centernet_finds_the_same_people(size: int) -> None:
    """The 384/320 px files (scripts/centernet_variants.py) find the clearly visible people 512 finds."""
    from pipeline.edge_stage.detectors.tflite_centernet import CenterNetDetector

    big = _centernet()
    small = CenterNetDetector.from_package("fp32", num_threads=1, min_score=0.3, input_size=size)
    assert small.input_size == (size, size) and small.tag.startswith(f"centernet-fp32-{size}@")
    frame = clip_frames(0, 1)[0]
    ref = [d for d in big.detect(frame) if d.label == "person" and d.score >= 0.5]
    got = [d for d in small.detect(frame) if d.label == "person"]
    assert ref, "frame 0 shows clearly visible people"

    for r in ref:
        assert max((iou(r.box, g.box) for g in got), default=0.0) >= 0.5, f"{size} px missed {r}"


@needs_centernet
def test_cameras_share_a_pool_of_interpreters() -> None:
    """Several cameras: make_detector leases from one pool of min(cameras, cores) interpreters;
    results equal a detector with its own interpreter; the pool goes when the last camera closes."""

    from pipeline.edge_stage.detectors import make_detector
    from pipeline.edge_stage.detectors.base import detector_pool_size
    from pipeline.edge_stage.detectors.runner_pool import InterpreterPool
    from pipeline.edge_stage.detectors.tflite_centernet import CenterNetDetector
    from pipeline.settings import CameraSettings, EdgeSettings

    cams = [CameraSettings(id=f"c{i}", source="x") for i in range(4)]
    edge = EdgeSettings(cameras=cams)
    assert detector_pool_size(edge, cores=2) == 2
    assert detector_pool_size(EdgeSettings(), cores=8) == 0  # one camera: its own interpreter
    assert detector_pool_size(edge.model_copy(update={"detector_pool": 0}), cores=2) == 0
    assert detector_pool_size(EdgeSettings(cameras=cams[:3]), cores=16) == 3
    frames = clip_frames(0, 4)
    own = CenterNetDetector.from_package("fp32", num_threads=2, min_score=0.3, input_size=edge.detector_input_size)
    want = [[(d.label, round(d.score, 3)) for d in own.detect(f) if d.score >= 0.3] for f in frames]
    dets = [make_detector(edge, min_score=0.3) for _ in cams]
    pools = {id(d._pool) for d in dets}  # type: ignore[attr-defined]
    assert len(pools) == 1 and len(InterpreterPool._shared) == 1
    got = detect_in_threads(dets, frames)
    for i in range(len(cams)):
        assert got[i] == want, f"camera {i} got other detections through the pool"
    for d in dets:
        d.close()
    assert not InterpreterPool._shared


@needs_centernet
def test_pool_grows_only_while_its_runners_are_busy() -> None:
    """The pool starts with one interpreter and adds one only when, over a window, its runners were
    busy >= grow_at of the time and a lease found none free; never beyond its size."""
    from pipeline.edge_stage.detectors.runner_pool import InterpreterPool
    from pipeline.edge_stage.detectors.tflite_centernet import MODELS_DIR

    now = [0.0]
    pool = InterpreterPool(MODELS_DIR / "centernet_fp32_320.tflite", 2, window_s=5.0, clock=lambda: now[0])
    assert pool.live == 1
    with pool.lease():  # 1 s busy in a 6 s window: 17 %
        now[0] += 1.0
    now[0] += 5.0
    with pool.lease():
        pass
    assert not pool._grow_due and pool.live == 1
    with pool.lease():  # busy the whole next window
        now[0] += 5.0
    assert pool._grow_due and pool.live == 1  # due, but nothing has waited yet
    with pool.lease() as first, pool.lease() as second:  # none free and growth due: a second runner, no wait
        assert second is not first
    assert pool.live == 2 and not pool._grow_due
    with pool.lease(), pool.lease():  # both busy a whole window: already at its size, so no growth is due
        now[0] += 6.0
    assert pool.live == 2 and not pool._grow_due


@needs_centernet
@pytest.mark.parametrize("size", [384, 320])
def test_resized_centernet_scores_are_on_the_512_px_scale(size: int) -> None:
    """The same people score alike at 512 px and (calibrated) at 384/320 px, so a min_score means
    one operating point at every size; the raw small-file scores are clearly lower."""
    from pipeline.edge_stage.detectors.tflite_centernet import CenterNetDetector, ScoreCalibration

    big = _centernet()
    small = CenterNetDetector.from_package("fp32", num_threads=1, min_score=0.05, input_size=size)
    cal = small.calibration
    assert not cal.identity
    for s in (0.1, 0.3, 0.35, 0.6):  # the runner's floor is the raw score that calibrates to min_score
        assert cal.apply(np.array([cal.raw_floor(s)], np.float32))[0] == pytest.approx(s, abs=1e-4)
    calibrated, raw = [], []
    for frame in clip_frames(0, 6, step=10):
        ref = [d for d in big.detect(frame) if d.label == "person" and d.score >= 0.15]
        got = [d for d in small.detect(frame) if d.label == "person"]
        for r in ref:
            best = max(got, key=lambda g: iou(r.box, g.box), default=None)
            if best is not None and iou(r.box, best.box) >= 0.5:
                calibrated.append(best.score - r.score)
                raw_score = float(ScoreCalibration(1 / cal.scale, -cal.shift / cal.scale).apply(
                    np.array([best.score], np.float32))[0])  # fmt: skip
                raw.append(raw_score - r.score)
    assert len(calibrated) >= 20
    off, off_raw = float(np.median(calibrated)), float(np.median(raw))
    assert abs(off) < 0.02 and off_raw < -0.015 and abs(off) < abs(off_raw) / 2, (size, off, off_raw)
