"""Files read at full speed: frames that are not due are grabbed, never converted to BGR."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pipeline.edge_stage.capture import Capture, Frame, Opener, open_cv
from pipeline.metrics import Registry
from pipeline.settings import SAMPLE_CLIP
from tests.edge_stage.edge_helpers import needs_clip

pytestmark = [pytest.mark.unit, needs_clip]


class ReadOnly:
    """cv2.VideoCapture without retrieve(): Capture falls back to read() for every frame."""

    def __init__(self, source: str, timeout_s: float) -> None:
        self._cap = open_cv(source, timeout_s)

    def isOpened(self) -> bool:
        return self._cap.isOpened()

    def read(self) -> tuple[bool, object]:
        return self._cap.read()

    def grab(self) -> bool:
        return self._cap.grab()

    def get(self, prop: int) -> float:
        return self._cap.get(prop)

    def release(self) -> None:
        self._cap.release()


def _sampled(opener: Opener, m: Registry, limit: int = 30) -> list[Frame]:
    cap = Capture("c", str(SAMPLE_CLIP), detect_fps=lambda: 5.0, realtime=False, stop=threading.Event(),
                  metrics=m, opener=opener)  # fmt: skip
    out: list[Frame] = []
    try:
        while len(out) < limit and (f := cap.next()) is not None:
            out.append(f)
    finally:
        cap.close()
    return out


def test_grabbed_frames_give_the_same_samples_as_decoding_every_frame() -> None:
    m_grab, m_read = Registry(), Registry()
    grabbed = _sampled(open_cv, m_grab)
    decoded = _sampled(ReadOnly, m_read)
    assert [(f.index, f.pos_ms) for f in grabbed] == [(f.index, f.pos_ms) for f in decoded]
    for a, b in zip(grabbed, decoded, strict=True):
        assert np.array_equal(a.image, b.image)
    skipped = m_grab.counter("frames_not_converted_total", cam="c")
    assert skipped >= len(grabbed) - 2  # the clip is 10 fps, sampled at 5: about every other frame
    assert m_read.counter("frames_not_converted_total", cam="c") == 0
    assert m_grab.counter("frames_read_total", cam="c") == m_read.counter("frames_read_total", cam="c")
