"""OpenCV's HOG + linear SVM people detector: the fallback when no TFLite model can run.

Always available (no model file), ~50 ms per 768x576 frame on a small CPU, and it under-detects
(small or occluded people). SVM margins become scores with a logistic squash.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.edge_stage.capture import Image
from pipeline.edge_stage.detectors.base import Detector, Roi, clip_box
from pipeline.operators.tracking import Detection


class HogPersonDetector(Detector):
    name = "hog"
    version = f"opencv-{cv2.__version__}"
    labels = ("person",)
    input_size = (64, 128)

    def __init__(self, min_score: float = 0.05, upscale_below: int = 300) -> None:
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
        self.min_score = min_score
        self.upscale_below = upscale_below

    def detect(self, frame_bgr: Image, roi: Roi | None = None) -> list[Detection]:
        h, w = frame_bgr.shape[:2]
        x0, y0, x1, y1 = roi if roi is not None else (0, 0, w, h)
        crop = frame_bgr[y0:y1, x0:x1]
        scale = 1.0
        if max(crop.shape[:2]) < self.upscale_below:  # small ROI: people are below HOG's 64x128 window
            scale = self.upscale_below / max(crop.shape[:2])
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        rects, weights = self._hog.detectMultiScale(crop, winStride=(8, 8), padding=(8, 8), scale=1.1)
        dets: list[Detection] = []
        for (rx, ry, rw, rh), wgt in zip(rects, np.ravel(weights), strict=False):
            score = 1.0 / (1.0 + math.exp(-float(wgt)))
            if score < self.min_score:
                continue
            box = clip_box(x0 + rx / scale, y0 + ry / scale, x0 + (rx + rw) / scale, y0 + (ry + rh) / scale, w, h)
            dets.append(Detection(box=box, score=score, label="person"))
        return dets
