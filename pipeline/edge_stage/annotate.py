"""Annotated video and snapshots: what the edge saw, for people checking it (``--annotate``).

Draws the tracker's confirmed tracks (box, ``#id label score``), the detector's region of
interest (thin grey) and the frame's motion state on each sampled frame, and writes them to an
MP4 (``mp4v``) at the camera's ``detect_fps``; ``--snapshot`` saves the last annotated frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2

from pipeline.edge_stage.capture import Image
from pipeline.operators.tracking import Track

_PALETTE = [(0, 200, 255), (255, 128, 0), (0, 255, 0), (255, 0, 255), (0, 128, 255), (255, 255, 0), (128, 0, 255)]


def draw(
    frame_bgr: Image,
    tracks: Sequence[Track],
    *,
    roi: tuple[int, int, int, int] | None = None,
    gated: bool = False,
    caption: str = "",
) -> Image:
    out = frame_bgr.copy()
    h, w = out.shape[:2]
    if roi is not None:
        cv2.rectangle(out, roi[:2], roi[2:], (160, 160, 160), 1)
    for t in tracks:
        colour = _PALETTE[t.id % len(_PALETTE)]
        x1, y1, x2, y2 = (int(t.box[0] * w), int(t.box[1] * h), int(t.box[2] * w), int(t.box[3] * h))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        text = f"#{t.id} {t.label} {t.score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = max(th + 4, y1)
        cv2.rectangle(out, (x1, ty - th - 4), (x1 + tw + 4, ty), colour, -1)
        cv2.putText(out, text, (x1 + 2, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    status = f"{caption} {'no motion (detector skipped)' if gated else ''}".strip()
    if status:
        cv2.putText(out, status, (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class Annotator:
    """Writes annotated frames to ``path`` (MP4); the writer opens on the first frame."""

    def __init__(self, path: Path | None, fps: float, snapshot: Path | None = None) -> None:
        self.path, self.fps, self.snapshot = path, fps, snapshot
        self._writer: cv2.VideoWriter | None = None
        self._last: Image | None = None
        self.frames = 0

    def write(self, image: Image) -> None:
        if self.path is not None:
            if self._writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (image.shape[1], image.shape[0]))
            self._writer.write(image)
        self._last = image
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.snapshot is not None and self._last is not None:
            self.snapshot.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(self.snapshot), self._last)
