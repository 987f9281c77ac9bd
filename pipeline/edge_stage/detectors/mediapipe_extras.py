"""MediaPipe's bundled models on person crops: face blurring and a coarse pose attribute.

The ``.tflite`` files come from the installed ``mediapipe`` package (0.10.21 bundles them under
``mediapipe/modules``); they are run with ai-edge-litert directly, without importing mediapipe
(whose import pulls TensorFlow and takes ~15 s). Nothing is downloaded.

- ``face_detection_short_range`` (BlazeFace, 128x128, 896 SSD anchors): faces in a crop are
  blurred before the crop leaves the node (``blur_faces``).
- ``pose_landmark_full`` (BlazePose GHUM, 256x256, 39 landmarks): on a person crop, the torso
  axis (mid-shoulders to mid-hips) gives ``{"pose": "up"}`` or ``{"pose": "down"}`` (lying:
  torso closer to horizontal than vertical), when the model is confident a person is there.
"""

from __future__ import annotations

import importlib.util
import math
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter

from pipeline.edge_stage.capture import Image
from pipeline.edge_stage.detectors.base import letterbox
from pipeline.edge_stage.events import crop_pixels
from pipeline.errors import ModelError


@cache
def mediapipe_modules_dir() -> Path:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("mediapipe is not installed (its bundled .tflite models are needed)")
    return Path(next(iter(spec.submodule_search_locations))) / "modules"


def _model(rel: str) -> Path:
    path = mediapipe_modules_dir() / rel
    if not path.is_file():
        raise ModelError(f"bundled MediaPipe model missing: {path} (mediapipe 0.10.21 ships it)")
    return path


def _ssd_anchors() -> Image:
    """BlazeFace short-range anchors (cx, cy), 896 of them: strides 8 (2 per cell), 16 (6 per cell)."""
    out: list[tuple[float, float]] = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = 128 // stride
        for y in range(n):
            for x in range(n):
                out.extend([((x + 0.5) / n, (y + 0.5) / n)] * per_cell)
    return np.array(out, np.float32)


class FaceDetector:
    def __init__(self, min_score: float = 0.5, num_threads: int = 1) -> None:
        self._it = Interpreter(
            model_path=str(_model("face_detection/face_detection_short_range.tflite")), num_threads=num_threads
        )
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]["index"]
        outs = {d["name"]: d["index"] for d in self._it.get_output_details()}
        self._reg, self._cls = outs["regressors"], outs["classificators"]
        self._anchors = _ssd_anchors()
        self.min_score = min_score

    def detect(self, image_bgr: npt.NDArray[Any]) -> list[tuple[int, int, int, int, float]]:
        """Faces as pixel boxes (x1, y1, x2, y2, score) in ``image_bgr``."""
        lb = letterbox(image_bgr, None, 128, pad=0)
        x = (lb.image[:, :, ::-1].astype(np.float32) / 127.5 - 1.0)[None]
        self._it.set_tensor(self._in, x)
        self._it.invoke()
        reg = self._it.get_tensor(self._reg)[0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(self._it.get_tensor(self._cls)[0, :, 0], -80, 80)))
        keep = np.nonzero(scores >= self.min_score)[0]
        boxes: list[list[float]] = []
        confs: list[float] = []
        for i in keep:
            cx = reg[i, 0] / 128 + self._anchors[i, 0]
            cy = reg[i, 1] / 128 + self._anchors[i, 1]
            w, h = reg[i, 2] / 128, reg[i, 3] / 128
            fx1, fy1 = lb.to_frame((cx - w / 2) * 128, (cy - h / 2) * 128)
            fx2, fy2 = lb.to_frame((cx + w / 2) * 128, (cy + h / 2) * 128)
            boxes.append([fx1, fy1, fx2 - fx1, fy2 - fy1])
            confs.append(float(scores[i]))
        picked = cv2.dnn.NMSBoxes(boxes, confs, self.min_score, 0.3) if boxes else []
        out = []
        hh, ww = image_bgr.shape[:2]
        for j in np.ravel(picked):
            bx, by, bw, bh = boxes[int(j)]
            out.append(
                (max(0, int(bx)), max(0, int(by)), min(ww, int(bx + bw) + 1), min(hh, int(by + bh) + 1), confs[int(j)])
            )
        return out


class PoseEstimator:
    def __init__(self, min_presence: float = 0.5, num_threads: int = 1) -> None:
        self._it = Interpreter(
            model_path=str(_model("pose_landmark/pose_landmark_full.tflite")), num_threads=num_threads
        )
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]["index"]
        outs = {d["name"]: d["index"] for d in self._it.get_output_details()}
        self._landmarks, self._flag = outs["Identity"], outs["Identity_1"]
        self.min_presence = min_presence

    def torso_angle(self, person_bgr: npt.NDArray[Any]) -> float | None:
        """Angle of the torso from vertical in degrees (0 = upright, 90 = lying), None if no person."""
        # square letterbox centred on the crop so the person keeps its aspect ratio
        h, w = person_bgr.shape[:2]
        side = max(h, w)
        canvas = np.zeros((side, side, 3), np.uint8)
        oy, ox = (side - h) // 2, (side - w) // 2
        canvas[oy : oy + h, ox : ox + w] = person_bgr
        x = cv2.resize(canvas, (256, 256))[:, :, ::-1].astype(np.float32)[None] / 255.0
        self._it.set_tensor(self._in, x)
        self._it.invoke()
        flag = float(self._it.get_tensor(self._flag).ravel()[0])
        if flag < self.min_presence:
            return None
        lm = self._it.get_tensor(self._landmarks).reshape(39, 5)
        shoulders = (lm[11, :2] + lm[12, :2]) / 2
        hips = (lm[23, :2] + lm[24, :2]) / 2
        dx, dy = float(shoulders[0] - hips[0]), float(shoulders[1] - hips[1])
        if math.hypot(dx, dy) < 1e-3:
            return None
        return math.degrees(math.atan2(abs(dx), abs(dy)))


class PersonExtras:
    """Face blurring and pose attributes for person crops (one instance per camera thread)."""

    def __init__(self) -> None:
        self._faces: FaceDetector | None = None
        self._pose: PoseEstimator | None = None

    def blur_faces(self, crop_bgr: npt.NDArray[Any]) -> Image:
        if self._faces is None:
            self._faces = FaceDetector()
        out = crop_bgr.copy()
        for x1, y1, x2, y2, _ in self._faces.detect(crop_bgr):
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                k = max(3, ((x2 - x1) // 3) | 1)
                out[y1:y2, x1:x2] = cv2.GaussianBlur(out[y1:y2, x1:x2], (k, k), 0)
        return out

    def pose_attrs(self, frame_bgr: Image, box: tuple[float, float, float, float]) -> dict[str, str]:
        if self._pose is None:
            self._pose = PoseEstimator()
        crop = crop_pixels(frame_bgr, box, pad=0.15)
        if crop.size == 0 or min(crop.shape[:2]) < 16:
            return {}
        angle = self._pose.torso_angle(crop)
        if angle is None:
            return {}
        return {"pose": "down" if angle > 45.0 else "up"}
