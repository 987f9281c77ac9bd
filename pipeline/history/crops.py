"""Crops kept with the history: decoded, optionally blurred again, and held under a byte cap.

The edge already caps its crops (``camera.crop_max_bytes``, 16 KiB by default) and blurs faces
when the camera asks for it; the store does not trust that: a crop over ``history.crop_max_bytes``
is re-encoded at falling JPEG quality, then at half size, and dropped (the caller counts it) if
it still does not fit. ``person_head`` is the hard-example recorder's blur over the edge box
(:mod:`pipeline.privacy_blur`).
"""

from __future__ import annotations

import base64
import binascii

import cv2
import numpy as np

from pipeline.privacy_blur import blur_person_heads, edge_box_in_crop

QUALITIES = (80, 65, 50, 35)


def prepare_crop(crop_b64: str, *, max_bytes: int, blur: str) -> bytes | str:
    """JPEG bytes to store, or the reason it is not stored."""
    try:
        raw = base64.b64decode(crop_b64, validate=True)
    except (binascii.Error, ValueError):
        return "crop_not_base64"
    if blur == "none" and len(raw) <= max_bytes:
        return raw  # the common case: stored as the edge sent it, no decode
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return "crop_not_jpeg"
    if blur == "person_head":
        image = blur_person_heads(image.astype(np.uint8), [edge_box_in_crop()])
    for scale in (1.0, 0.5):
        if scale != 1.0:
            h, w = image.shape[:2]
            image = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
        for quality in QUALITIES:
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and len(buf) <= max_bytes:
                return bytes(buf.tobytes())
    return "crop_too_large"
