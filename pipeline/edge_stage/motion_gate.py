"""Motion gate: second step of the edge data path (capture -> motion gate -> detector).

Background subtraction (OpenCV MOG2) on a downscaled, blurred grey copy of each sampled frame.
Pixels under the camera's mask polygons are ignored. A frame whose share of changed pixels is
below ``motion_threshold`` skips the detector. Otherwise the changed blobs become motion regions
(full-resolution pixel boxes), and :func:`detection_roi` decides whether the detector looks at
their union (expanded, plus the boxes of live tracks so they are not lost) or at the full frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.edge_stage.capture import Image

PxBox = tuple[int, int, int, int]  # x1, y1, x2, y2 in full-frame pixels
Polygon = Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class MotionResult:
    motion: bool
    share: float  # changed pixels / unmasked pixels
    regions: list[PxBox] = field(default_factory=list)


class MotionGate:
    """Stateful per camera. ``work_width`` is the width of the analysed copy."""

    def __init__(
        self,
        threshold: float,
        masks: Sequence[Polygon] = (),
        *,
        work_width: int = 192,
        history: int = 100,
        var_threshold: float = 25.0,
        warmup_frames: int = 2,
    ) -> None:
        self.threshold = threshold
        self.work_width = work_width
        self._masks: list[Polygon] = list(masks)
        self._history, self._var_threshold = history, var_threshold
        self._warmup = warmup_frames
        self._seen = 0
        self._bg = self._new_subtractor()
        self._mask_img: Image | None = None
        self._mask_key: tuple[int, int] | None = None
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def _new_subtractor(self) -> cv2.BackgroundSubtractorMOG2:
        return cv2.createBackgroundSubtractorMOG2(
            history=self._history, varThreshold=self._var_threshold, detectShadows=False
        )

    def reconfigure(self, threshold: float, masks: Sequence[Polygon]) -> None:
        """Apply a live config change (threshold and masks); the background model is kept."""
        self.threshold = threshold
        if [list(m) for m in masks] != [list(m) for m in self._masks]:
            self._masks = list(masks)
            self._mask_img = None

    def _valid_mask(self, w: int, h: int) -> Image | None:
        """255 where motion counts, 0 under the mask polygons (None = no masks)."""
        if not self._masks:
            return None
        if self._mask_img is None or self._mask_key != (w, h):
            img = np.full((h, w), 255, np.uint8)
            for poly in self._masks:
                pts = np.array([[x * w, y * h] for x, y in poly], np.int32)
                if len(pts) >= 3:
                    cv2.fillPoly(img, [pts], (0,))
            self._mask_img, self._mask_key = img, (w, h)
        return self._mask_img

    def check(self, frame_bgr: Image) -> MotionResult:
        h, w = frame_bgr.shape[:2]
        scale = self.work_width / w
        small = cv2.resize(frame_bgr, (self.work_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        fg = self._bg.apply(grey)
        self._seen += 1
        valid = self._valid_mask(grey.shape[1], grey.shape[0])
        if valid is not None:
            fg = cv2.bitwise_and(fg, valid)
            area = max(1, int(np.count_nonzero(valid)))
        else:
            area = grey.size
        if self._seen <= self._warmup:  # no background yet: treat the whole frame as moving
            return MotionResult(True, 1.0, [(0, 0, w, h)])
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._kernel)
        share = float(np.count_nonzero(fg)) / area
        if share < self.threshold:
            return MotionResult(False, share)
        fg = cv2.dilate(fg, self._kernel, iterations=2)
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        regions: list[PxBox] = []
        for c in contours:
            x, y, cw, ch = cv2.boundingRect(c)
            if cw * ch < 4:
                continue
            regions.append(
                (int(x / scale), int(y / scale), min(w, int((x + cw) / scale)), min(h, int((y + ch) / scale)))
            )
        return MotionResult(bool(regions), share, regions)


def union(boxes: Sequence[PxBox]) -> PxBox:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def detection_roi(
    regions: Sequence[PxBox],
    frame_size: tuple[int, int],
    *,
    track_boxes: Sequence[PxBox] = (),
    margin: float = 0.15,
    min_side: int = 192,
    max_share: float = 0.5,
) -> PxBox | None:
    """Region the detector should look at, or None for the full frame.

    The union of motion regions and live track boxes, grown by ``margin`` of its size (at least
    ``min_side`` px a side, so small blobs keep context), clipped to the frame. When that covers
    more than ``max_share`` of the frame, the full frame is cheaper to reason about: None.
    """
    boxes = [*regions, *track_boxes]
    if not boxes:
        return None
    w, h = frame_size
    x1, y1, x2, y2 = union(boxes)
    bw, bh = x2 - x1, y2 - y1
    grow_x = max(bw * margin, (min_side - bw) / 2, 0)
    grow_y = max(bh * margin, (min_side - bh) / 2, 0)
    rx1, ry1 = max(0, int(x1 - grow_x)), max(0, int(y1 - grow_y))
    rx2, ry2 = min(w, int(x2 + grow_x)), min(h, int(y2 + grow_y))
    if (rx2 - rx1) * (ry2 - ry1) > max_share * w * h:
        return None
    return (rx1, ry1, rx2, ry2)


def detection_roi_with_tracks(
    regions: Sequence[PxBox], frame_size: tuple[int, int], track_boxes: Iterable[Sequence[float]]
) -> PxBox | None:
    """:func:`detection_roi` with the live tracks given as normalised boxes (x1, y1, x2, y2)."""
    w, h = frame_size
    px = [(int(b[0] * w), int(b[1] * h), int(b[2] * w), int(b[3] * h)) for b in track_boxes]
    return detection_roi(regions, frame_size, track_boxes=px)
