"""CenterNet-MobileNetV3 (COCO-80): the edge's main detector, run with ai-edge-litert (default) or
OpenVINO (``edge.detector_runtime``, :mod:`pipeline.edge_stage.detectors.openvino_centernet`).

Model files: ``pipeline/edge_stage/models/centernet_fp32.tflite`` and ``centernet_int8.tflite``
(512 px), ``centernet_fp32_384.tflite`` and ``centernet_fp32_320.tflite`` (the same network re-sized
by ``scripts/centernet_variants.py``), described by ``models.json`` (version, source). Tensors:
input float32 [1, S, S, 3] raw 0-255 RGB; output [1, 100, 6] = x1, y1, x2, y2 (S-px space), score,
class (0-based COCO-80). The analysed region (motion ROI or full frame) is letterboxed into the
S-px input, top-left aligned.

Runners (a LiteRT interpreter or an OpenVINO infer request): a detector owns one, or leases one
from the :class:`~pipeline.edge_stage.detectors.runner_pool.InterpreterPool` shared by the cameras
of a node (``make_detector`` does that when a node runs several cameras).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter

from pipeline.edge_stage.capture import Image
from pipeline.edge_stage.detectors.base import Detector, Roi, clip_box, letterbox
from pipeline.edge_stage.detectors.runner_pool import InterpreterPool, Runner, runner_factory
from pipeline.errors import ModelError
from pipeline.operators.coco import COCO80, label_of
from pipeline.operators.tracking import Detection

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def model_version(variant: str, models_dir: Path = MODELS_DIR) -> str:
    """Version of a packaged model from ``models.json`` ("unknown" when it says nothing)."""
    try:
        meta: Any = json.loads((models_dir / "models.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    if isinstance(meta, dict):
        for key in (f"centernet_{variant}", f"centernet_{variant}.tflite", "centernet"):
            entry = meta.get(key)
            if isinstance(entry, dict) and entry.get("version") is not None:
                return str(entry["version"])
        models = meta.get("models")
        if isinstance(models, list | dict):
            items = models.values() if isinstance(models, dict) else models
            for entry in items:
                named = isinstance(entry, dict) and variant in str(entry.get("file", entry.get("name", "")))
                if named and entry.get("version") is not None:
                    return str(entry["version"])
        if meta.get("version") is not None:
            return str(meta["version"])
    return "unknown"


@dataclass(frozen=True, slots=True)
class ScoreCalibration:
    """Puts a re-sized file's scores on the 512 px file's scale: logit(s') = scale * logit(s) + shift.

    Why: CenterNet's scores fall as its input shrinks (a person covers fewer heatmap cells), and
    every threshold downstream (a camera's ``min_score``, a rule's fused ``min_score``, the hard
    examples' suggestions) is set in the 512 px file's units. Uncalibrated, 384 px at 0.35 lost
    1.5 recall points, and through the pipeline its tracks missed 5 of 24 line crossings (1 with
    the calibration; benchmarks/RESULTS.md, issue 18 session 4). The two numbers are fitted without ground truth by
    ``scripts/centernet_score_calibration.py`` (least squares in logit space on person boxes both
    sizes find in the same frames) and kept in ``models.json`` beside the file they describe.
    """

    scale: float = 1.0
    shift: float = 0.0

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.shift == 0.0

    def apply(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self.identity:
            return scores
        p = np.clip(scores.astype(np.float64), 1e-6, 1 - 1e-6)
        z = self.scale * np.log(p / (1 - p)) + self.shift
        return np.asarray(1.0 / (1.0 + np.exp(-z)), np.float32)

    def raw_floor(self, score: float) -> float:
        """The raw score that maps to ``score`` (the runner's cut-off before calibration)."""
        if self.identity or not 0.0 < score < 1.0:
            return score
        z = (math.log(score / (1 - score)) - self.shift) / self.scale
        return 1.0 / (1.0 + math.exp(-z))


def score_calibration(file_name: str, models_dir: Path = MODELS_DIR) -> ScoreCalibration:
    """The ``score_calibration`` of ``file_name`` in ``models.json`` (identity when it has none)."""
    try:
        meta: Any = json.loads((models_dir / "models.json").read_text())
        entry = next(e for e in meta["models"] if e.get("file") == file_name)
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return ScoreCalibration()
    cal = entry.get("score_calibration")
    if not isinstance(cal, dict):
        return ScoreCalibration()
    try:
        return ScoreCalibration(float(cal["logit_scale"]), float(cal["logit_shift"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"models.json: bad score_calibration for {file_name}: {exc}") from exc


class LiteRtRunner:
    """One LiteRT interpreter of a model file: not thread-safe, one caller at a time."""

    precision = "f32"  # float models run float32 (the int8 file: int8 weights, float activations)

    def __init__(self, model_path: Path, num_threads: int) -> None:
        if not model_path.is_file():
            raise ModelError(f"model file not found: {model_path}")
        try:
            self._it = Interpreter(model_path=str(model_path), num_threads=num_threads)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load {model_path}: {exc}") from exc
        inp = self._it.get_input_details()[0]
        out = self._it.get_output_details()[0]
        shape = tuple(int(d) for d in inp["shape"])
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ModelError(f"{model_path}: unexpected input shape {shape}")
        if tuple(int(d) for d in out["shape"])[-1] != 6:
            raise ModelError(f"{model_path}: unexpected output shape {out['shape']}")
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype, self._out_dtype = inp["dtype"], out["dtype"]
        self._in_quant = inp.get("quantization", (0.0, 0))
        self._out_quant = out.get("quantization", (0.0, 0))
        self.size = shape[1]

    def run(self, x: npt.NDArray[Any], floor: float) -> npt.NDArray[np.float32]:
        """``x``: float32 [1, S, S, 3] raw 0-255 RGB -> the model's [100, 6] rows (``floor`` is
        applied by the caller: the graph decodes a fixed top 100)."""
        if self._in_dtype in (np.uint8, np.int8):
            scale, zero = self._in_quant
            info = np.iinfo(self._in_dtype)
            x = np.clip(np.round(x / (scale or 1.0) + zero), info.min, info.max).astype(self._in_dtype)
        self._it.set_tensor(self._in_index, x)
        self._it.invoke()
        out = self._it.get_tensor(self._out_index)[0]  # a copy: the interpreter may go back to a pool
        if self._out_dtype in (np.uint8, np.int8):
            scale, zero = self._out_quant
            out = (out.astype(np.float32) - zero) * scale
        return np.asarray(out, np.float32)


class CenterNetDetector(Detector):
    labels = COCO80

    def __init__(
        self,
        model_path: Path,
        *,
        name: str,
        version: str,
        num_threads: int = 2,
        min_score: float = 0.05,
        pool: InterpreterPool | None = None,
        runtime: str = "litert",
        precision: str = "f32",
        calibration: ScoreCalibration | None = None,
    ) -> None:
        self._pool = pool
        self.calibration = calibration or ScoreCalibration()
        self._runner: Runner | None = None
        if pool is None:
            self._runner = runner_factory(model_path, num_threads, runtime, precision)()
        runner = self._runner if self._runner is not None else pool.any()  # type: ignore[union-attr]
        self.name, self.version = name, version
        # what the engine runs in: OpenVINO may answer f32 to a bf16 request (no bf16 on this CPU)
        self.precision = runner.precision
        self.size = runner.size
        self.input_size = (self.size, self.size)
        self.min_score = min_score

    @classmethod
    def from_package(
        cls,
        variant: str = "fp32",
        *,
        num_threads: int = 2,
        min_score: float = 0.05,
        models_dir: Path = MODELS_DIR,
        input_size: int = 512,
        pool_size: int = 0,
        runtime: str = "litert",
        precision: str = "f32",
    ) -> CenterNetDetector:
        """A packaged model; ``pool_size`` > 0: lease from the node's shared pool of at most that many."""
        suffix = "" if input_size == 512 else f"_{input_size}"
        path = models_dir / f"centernet_{variant}{suffix}.tflite"
        if not path.is_file():
            raise ModelError(f"no packaged {variant} model at {input_size} px ({path.name})")
        pool = InterpreterPool.shared(path, pool_size, num_threads, runtime, precision) if pool_size > 0 else None
        name = f"centernet-{variant}" + ("" if input_size == 512 else f"-{input_size}")
        if runtime == "openvino":
            name += "-ov" if precision == "f32" else f"-ov-{precision}"
        return cls(
            path,
            name=name,
            version=model_version(variant, models_dir),
            num_threads=num_threads,
            min_score=min_score,
            pool=pool,
            runtime=runtime,
            precision=precision,
            calibration=score_calibration(path.name, models_dir),
        )

    def raw(self, frame_bgr: Image, roi: Roi | None = None) -> tuple[Image, Any]:
        """The model's rows (x1, y1, x2, y2, score, class) for the letterboxed region, and the
        letterbox; scores calibrated onto the 512 px file's scale (:class:`ScoreCalibration`)."""
        lb = letterbox(frame_bgr, roi, self.size)
        x = lb.image[:, :, ::-1].astype(np.float32)[None]
        floor = self.calibration.raw_floor(self.min_score)
        if self._runner is not None:
            out = self._runner.run(x, floor)
        else:
            assert self._pool is not None
            with self._pool.lease() as runner:
                out = runner.run(x, floor)
        if not self.calibration.identity:
            out = out.copy()
            out[:, 4] = self.calibration.apply(out[:, 4])
        return out, lb

    def close(self) -> None:
        if self._pool is not None:
            self._pool.release_user()
            self._pool = None

    def detect(self, frame_bgr: Image, roi: Roi | None = None) -> list[Detection]:
        out, lb = self.raw(frame_bgr, roi)
        h, w = frame_bgr.shape[:2]
        dets: list[Detection] = []
        for x1, y1, x2, y2, score, cls in out:
            if not score >= self.min_score:
                continue
            fx1, fy1 = lb.to_frame(float(x1), float(y1))
            fx2, fy2 = lb.to_frame(float(x2), float(y2))
            box = clip_box(fx1, fy1, fx2, fy2, w, h)
            if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
                continue
            dets.append(Detection(box=box, score=float(score), label=label_of(cls)))
        return dets
