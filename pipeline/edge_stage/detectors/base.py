"""The detector interface every edge detector implements, and the letterbox they share.

``detect(frame_bgr, roi)`` returns :class:`~pipeline.operators.tracking.Detection` s with boxes
normalised to the *full* frame (x1, y1, x2, y2 in [0, 1]), whatever part of it was analysed:
``roi`` (full-frame pixels) narrows the search to the motion region, None means the whole frame.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.edge_stage.capture import Image
from pipeline.operators.tracking import Detection
from pipeline.settings import EdgeSettings

Roi = tuple[int, int, int, int]  # x1, y1, x2, y2 in full-frame pixels


@dataclass(frozen=True, slots=True)
class Letterboxed:
    """A region scaled into a square model input, top-left aligned, and how to map back."""

    image: Image  # size x size x 3, same channel order as the input
    scale: float  # model px per frame px
    offset: tuple[int, int]  # roi origin in the frame (x, y)

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        return (x / self.scale + self.offset[0], y / self.scale + self.offset[1])


def letterbox(frame: Image, roi: Roi | None, size: int, pad: int = 114) -> Letterboxed:
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = roi if roi is not None else (0, 0, w, h)
    crop = frame[y1:y2, x1:x2]
    ch, cw = crop.shape[:2]
    scale = size / max(cw, ch)
    nw, nh = max(1, min(size, round(cw * scale))), max(1, min(size, round(ch * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas = np.full((size, size, 3), pad, np.uint8)
    canvas[:nh, :nw] = cv2.resize(crop, (nw, nh), interpolation=interp)
    return Letterboxed(canvas, scale, (x1, y1))


def clip_box(x1: float, y1: float, x2: float, y2: float, w: int, h: int) -> tuple[float, float, float, float]:
    """Pixel box -> normalised box clipped to [0, 1]."""

    def c(v: float) -> float:
        return min(1.0, max(0.0, v))

    return (c(x1 / w), c(y1 / h), c(x2 / w), c(y2 / h))


class Detector(abc.ABC):
    """One detector instance per camera thread (interpreters are not thread-safe)."""

    name: str  # e.g. "centernet-fp32"
    version: str  # model version (models.json) or library version
    labels: tuple[str, ...]  # every label it can emit
    input_size: tuple[int, int]  # model input (width, height)

    @abc.abstractmethod
    def detect(self, frame_bgr: Image, roi: Roi | None = None) -> list[Detection]:
        """Objects in ``frame_bgr`` (restricted to ``roi``), boxes normalised to the full frame."""

    @property
    def tag(self) -> str:
        """``name@version``: the ``det`` field of events."""
        return f"{self.name}@{self.version}"

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release native resources."""


def make_detector(edge: EdgeSettings, min_score: float = 0.05) -> Detector:
    """The detector named by ``edge.detector`` (imports are local: each pulls a heavy library)."""
    if edge.detector == "hog":
        from pipeline.edge_stage.detectors.hog import HogPersonDetector

        return HogPersonDetector()
    from pipeline.edge_stage.detectors.tflite_centernet import CenterNetDetector

    variant = "int8" if edge.detector == "centernet-int8" else "fp32"
    pool = detector_pool_size(edge)
    return CenterNetDetector.from_package(
        variant,
        num_threads=1 if pool else edge.detector_threads,
        min_score=min_score,
        input_size=edge.detector_input_size,
        pool_size=pool,
        runtime=edge.detector_runtime,
        precision=edge.detector_precision,
    )


def detector_pool_size(edge: EdgeSettings, cores: int | None = None) -> int:
    """Interpreters the node's cameras share (0: one interpreter per camera).

    ``edge.detector_pool`` None (auto): with several cameras, one single-threaded interpreter per
    core, at most one per camera; with one camera, none (its own ``detector_threads`` interpreter).
    """
    if edge.detector_pool is not None:
        return edge.detector_pool
    cameras = len(edge.cameras)
    if cameras <= 1:
        return 0
    return max(1, min(cameras, cores or os.cpu_count() or 1))
