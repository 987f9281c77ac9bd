"""CenterNet on OpenVINO (``edge.detector_runtime: openvino``): the same file, the same detections.

f32 must reproduce LiteRT's rows (the graph is cut before its decoding and decoded again in numpy);
bf16 must find the same people. The cut is a fence around OpenVINO's graph layout: a graph it does
not recognise fails with a ModelError, never with wrong boxes.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.edge_stage.detectors.openvino_centernet import decode_heads, heads_model
from pipeline.edge_stage.detectors.runner_pool import InterpreterPool
from pipeline.edge_stage.detectors.tflite_centernet import CenterNetDetector
from pipeline.errors import ModelError
from pipeline.operators.tracking import iou
from pipeline.settings import CameraSettings, EdgeSettings
from tests.edge_stage.edge_helpers import clip_frames, detect_in_threads, needs_centernet, needs_clip

pytestmark = [pytest.mark.unit]


def test_decode_heads_finds_peaks_boxes_and_keeps_the_best() -> None:
    heat = np.zeros((3, 8, 8), np.float32)
    heat[0, 2, 3] = 0.9  # a person peak
    heat[0, 2, 4] = 0.6  # its neighbour: not a peak
    heat[2, 0, 0] = 0.4  # a corner peak of class 2 (the border counts as -inf)
    heat[1, 6, 6] = 0.05  # under the floor
    sizes = np.zeros((64, 4), np.float32)
    sizes[2 * 8 + 3] = (4, 8, 4, 16)  # left, top, right, bottom edges from the centre
    sizes[0] = (1, 1, 2, 2)
    out = decode_heads(heat, sizes, input_size=32, floor=0.1)  # stride 32 / 8 = 4
    assert out.shape == (2, 6)
    np.testing.assert_allclose(out[0], [12 - 4, 8 - 8, 12 + 4, 8 + 16, 0.9, 0])
    np.testing.assert_allclose(out[1], [-1, -1, 2, 2, 0.4, 2])
    assert decode_heads(heat, sizes, 32, floor=0.5).shape == (1, 6)
    assert decode_heads(heat, sizes, 32, floor=0.1, top_k=1)[0, 4] == pytest.approx(0.9)
    assert decode_heads(heat, sizes, 32, floor=0.95).shape == (0, 6)
    heat[0, 2, 4] = 0.9  # a plateau: both cells equal their neighbourhood's max, both are peaks
    assert decode_heads(heat, sizes, 32, floor=0.5).shape == (2, 6)


@needs_centernet
@needs_clip
@pytest.mark.parametrize("size", [512, 384, 320])
def test_openvino_f32_gives_litert_rows(size: int) -> None:
    litert = CenterNetDetector.from_package("fp32", num_threads=1, min_score=0.1, input_size=size)
    ov = CenterNetDetector.from_package(
        "fp32", num_threads=1, min_score=0.1, input_size=size, runtime="openvino", precision="f32"
    )
    assert ov.input_size == (size, size) and ov.precision == "f32" and "-ov@" in ov.tag
    rows = 0
    for frame in clip_frames(0, 4, step=15):
        want, _ = litert.raw(frame)
        got, _ = ov.raw(frame)
        want = want[want[:, 4] >= 0.1]
        assert len(got) == len(want)
        for row in want:  # equal scores may come in another order: each row's closest
            assert np.abs(got - row).max(axis=1).min() < 0.01, row
            rows += 1
    assert rows > 20  # the clip shows people on every frame


@needs_centernet
@needs_clip
def test_openvino_bf16_finds_the_same_people() -> None:
    """bf16 (on CPUs that have it; f32 elsewhere) moves scores a little, not who is found."""
    litert = CenterNetDetector.from_package("fp32", num_threads=1, min_score=0.3)
    ov = CenterNetDetector.from_package("fp32", num_threads=1, min_score=0.3, runtime="openvino", precision="bf16")
    assert ov.precision in ("bf16", "f32") and ov.tag.startswith("centernet-fp32-ov-bf16@")
    for frame in clip_frames(0, 4, step=15):
        want = [d for d in litert.detect(frame) if d.label == "person" and d.score >= 0.45]
        got = [d for d in ov.detect(frame) if d.label == "person"]
        assert want
        for w in want:
            best = max(got, key=lambda g: iou(w.box, g.box))
            assert iou(w.box, best.box) >= 0.8 and abs(best.score - w.score) < 0.08, (w, best)


@needs_centernet
@needs_clip
def test_openvino_pool_shares_one_compiled_model_across_cameras() -> None:
    from pipeline.edge_stage.detectors import make_detector

    cams = [CameraSettings(id=f"c{i}", source="x") for i in range(3)]
    edge = EdgeSettings(cameras=cams, detector_runtime="openvino", detector_pool=2)
    frames = clip_frames(0, 3, step=15)
    own = CenterNetDetector.from_package(
        "fp32", num_threads=1, min_score=0.3, runtime="openvino", input_size=edge.detector_input_size
    )
    want = [[(d.label, round(d.score, 3)) for d in own.detect(f)] for f in frames]
    dets = [make_detector(edge, min_score=0.3) for _ in cams]
    assert len({id(d._pool) for d in dets}) == 1  # type: ignore[attr-defined]
    got = detect_in_threads(dets, frames)
    assert all(got[i] == want for i in range(len(cams)))
    for d in dets:
        d.close()
    assert not InterpreterPool._shared


def test_a_graph_without_centernet_decoding_is_refused() -> None:
    from pipeline.edge_stage.detectors.mediapipe_extras import _model

    with pytest.raises(ModelError, match="peak MaxPool"):
        heads_model(_model("face_detection/face_detection_short_range.tflite"))


def test_settings_refuse_runtime_combinations_that_cannot_run() -> None:
    with pytest.raises(ValidationError, match="float CenterNet"):
        EdgeSettings(detector="centernet-int8", detector_runtime="openvino")
    with pytest.raises(ValidationError, match="needs detector_runtime openvino"):
        EdgeSettings(detector_precision="bf16")
    assert EdgeSettings(detector_runtime="openvino", detector_precision="bf16").detector_precision == "bf16"
