"""The committed model files: checksums, metadata and a detection smoke test on the sample clip."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUMS = ROOT / "models" / "SHA256SUMS"
EDGE_MODELS = ROOT / "pipeline" / "edge_stage" / "models"
SAMPLE = ROOT / "samples" / "vtest_clip.mp4"
SERVING = ROOT / "models" / "centernet" / "1"
SERVING_V2 = ROOT / "models" / "centernet" / "2"  # batch-aware, 256 px (scripts/centernet_variants.py)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sums() -> dict[str, str]:
    out = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.strip()] = digest
    return out


def _frame_rgb512(index: int = 0, size: int = 512) -> Any:  # numpy array (cv2, numpy: importorskip, untyped here)
    cv2 = pytest.importorskip("cv2")
    np = pytest.importorskip("numpy")
    cap = cv2.VideoCapture(str(SAMPLE))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
    finally:
        cap.release()
    assert ok, f"cannot read frame {index} of {SAMPLE}"
    rgb = cv2.cvtColor(cv2.resize(frame, (size, size)), cv2.COLOR_BGR2RGB)
    return rgb.astype(np.float32)[None]


def _persons(det: Any, min_score: float = 0.3) -> list[Any]:  # det: a model's output rows
    return [d for d in det if round(float(d[5])) == 0 and float(d[4]) >= min_score]


@pytest.mark.unit
def test_sha256sums_match_files() -> None:
    sums = _sums()
    assert sums, "SHA256SUMS is empty"
    for name, digest in sums.items():
        path = ROOT / name
        assert path.is_file(), f"{name} listed in SHA256SUMS is missing"
        assert _sha256(path) == digest, f"{name} does not match SHA256SUMS"


@pytest.mark.unit
def test_sha256sums_cover_every_model_file() -> None:
    listed = set(_sums())
    model_files = [p for p in (ROOT / "models" / "centernet").rglob("*") if p.is_file()]
    model_files += list(EDGE_MODELS.glob("*.tflite"))
    for p in model_files:
        assert p.relative_to(ROOT).as_posix() in listed, f"{p} not in SHA256SUMS"


@pytest.mark.unit
def test_models_json_describes_tflite_files() -> None:
    entries = json.loads((EDGE_MODELS / "models.json").read_text())["models"]
    files = {e["file"] for e in entries}
    assert {"centernet_fp32.tflite", "centernet_int8.tflite"} <= files
    for e in entries:
        path = EDGE_MODELS / e["file"]
        assert e["sha256"] == _sha256(path)
        assert e["size"] == path.stat().st_size
        assert e["input_size"][0] == e["input_size"][1] and e["input_size"][0] % 32 == 0
        assert e["labels"] == "coco80"
        if e["input_size"][0] != 512:  # re-sized files are calibrated onto 512 px's scores, for this very file
            cal = e["score_calibration"]
            assert cal["sha256"] == e["sha256"], f"{e['file']} changed: re-run scripts/centernet_score_calibration.py"
            assert 0.3 < cal["logit_scale"] < 3 and cal["pairs"] >= 200
    assert (EDGE_MODELS / "LICENSE.human-models").is_file()


@pytest.mark.integration
@pytest.mark.parametrize("name", ["centernet_fp32.tflite", "centernet_int8.tflite"])
def test_tflite_detects_people_in_sample_frame(name: str) -> None:
    interpreter_mod = pytest.importorskip("ai_edge_litert.interpreter")
    it = interpreter_mod.Interpreter(model_path=str(EDGE_MODELS / name), num_threads=2)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert list(inp["shape"]) == [1, 512, 512, 3]
    assert list(out["shape"]) == [1, 100, 6]
    it.set_tensor(inp["index"], _frame_rgb512(0))
    it.invoke()
    det = it.get_tensor(out["index"])[0]
    people = _persons(det)
    assert len(people) >= 2, f"{name}: {len(people)} persons >= 0.3 in frame 0"
    for x1, y1, x2, y2, *_ in people:
        assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512


@pytest.mark.integration
@pytest.mark.slow
def test_savedmodel_serving_signature_batches() -> None:
    tf = pytest.importorskip("tensorflow")
    np = pytest.importorskip("numpy")
    sig = tf.saved_model.load(str(SERVING)).signatures["serving_default"]
    spec = sig.structured_input_signature[1]["images"]
    assert spec.shape.as_list() == [None, 512, 512, 3]
    assert spec.dtype == tf.float32
    frame = _frame_rgb512(0)
    det = sig(images=tf.constant(np.concatenate([frame, frame])))["detections"].numpy()
    assert det.shape == (2, 100, 6)
    assert len(_persons(det[0])) >= 2
    np.testing.assert_allclose(det[0], det[1], atol=1e-4)


@pytest.mark.integration
@pytest.mark.slow
def test_version_2_batches_for_real_and_agrees_with_single_calls() -> None:
    """Version 2 has a real batch dimension: one batch of 3 gives what 3 single calls give."""
    tf = pytest.importorskip("tensorflow")
    np = pytest.importorskip("numpy")
    sig = tf.saved_model.load(str(SERVING_V2)).signatures["serving_default"]
    spec = sig.structured_input_signature[1]["images"]
    assert spec.shape.as_list() == [None, 256, 256, 3]
    frames = np.concatenate([_frame_rgb512(i, 256) for i in (0, 20, 40)])
    batch = sig(images=tf.constant(frames))["detections"].numpy()
    single = np.concatenate([sig(images=tf.constant(f[None]))["detections"].numpy() for f in frames])
    assert batch.shape == (3, 100, 6)
    np.testing.assert_allclose(batch, single, atol=1e-3)
    assert len(_persons(batch[0])) >= 2
    assert ((batch[0][:, :4] >= -64) & (batch[0][:, :4] <= 320)).all()
