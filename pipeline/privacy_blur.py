"""Privacy blur of stored crops, shared by the hard-example recorder and the alert history.

The edge grows a detection box by ``EDGE_CROP_PAD`` on each side when it cuts a crop, so the
person's box inside a crop is known without any model; ``person_head`` blurs its upper third
(Gaussian, kernel a third of the box): no face model needed on the cloud side.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

EDGE_CROP_PAD = 0.1  # pipeline.edge_stage.events.crop_pixels grows the box by this on each side


def edge_box_in_crop(pad: float = EDGE_CROP_PAD) -> tuple[float, float, float, float]:
    lo = pad / (1 + 2 * pad)
    return (lo, lo, 1 - lo, 1 - lo)


def blur_person_heads(
    bgr: npt.NDArray[np.uint8], boxes: list[tuple[float, float, float, float]]
) -> npt.NDArray[np.uint8]:
    """Gaussian blur over the upper third of each (crop-normalised) box."""
    out = bgr.copy()
    h, w = out.shape[:2]
    for x1, y1, x2, y2 in boxes:
        ix1, iy1 = max(0, int(x1 * w)), max(0, int(y1 * h))
        ix2, iy2 = min(w, int(np.ceil(x2 * w))), min(h, int(np.ceil((y1 + (y2 - y1) / 3) * h)))
        if ix2 - ix1 < 2 or iy2 - iy1 < 2:
            continue
        k = max(3, (max(ix2 - ix1, iy2 - iy1) // 3) | 1)
        out[iy1:iy2, ix1:ix2] = cv2.GaussianBlur(out[iy1:iy2, ix1:ix2], (k, k), 0)
    return out
