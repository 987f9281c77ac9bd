"""A small still of the camera for the console: where zones and lines are drawn.

Published retained (QoS 1) on ``<prefix>/<site>/<cam>/snapshot`` as raw JPEG bytes, at most
every ``edge.snapshot_interval_s`` (0 = never), so the bandwidth is bounded: at the 30 s default
and ~25 KB per 640-px still that is under 1 KB/s per camera. Faces are blurred first when the
camera has ``blur_faces`` (the same MediaPipe filter its crops get).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

MAX_WIDTH = 640
QUALITIES = (75, 60, 45, 30)


def encode_snapshot(
    frame_bgr: np.ndarray[Any, Any], max_bytes: int, blur: Callable[[Any], Any] | None = None
) -> bytes | None:
    """JPEG of the frame scaled to at most ``MAX_WIDTH`` wide and ``max_bytes`` long (None if it cannot fit)."""
    image = frame_bgr
    h, w = image.shape[:2]
    if w > MAX_WIDTH:
        image = cv2.resize(image, (MAX_WIDTH, max(1, h * MAX_WIDTH // w)), interpolation=cv2.INTER_AREA)
    if blur is not None:
        image = blur(image)
    for quality in QUALITIES:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(buf) <= max_bytes:
            return bytes(buf.tobytes())
    return None
