"""CenterNet-MobileNetV3 (COCO-80) run with ai-edge-litert: the edge's main detector.

Model files: ``pipeline/edge_stage/models/centernet_fp32.tflite`` and ``centernet_int8.tflite``,
described by ``models.json`` (version, source). Tensors: input float32 [1, 512, 512, 3] raw 0-255
RGB; output [1, 100, 6] = x1, y1, x2, y2 (512-px space), score, class (0-based COCO-80). The
analysed region (motion ROI or full frame) is letterboxed into the 512-px input, top-left aligned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter

from pipeline.edge_stage.capture import Image
from pipeline.edge_stage.detectors.base import Detector, Roi, clip_box, letterbox
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


class CenterNetDetector(Detector):
    labels = COCO80

    def __init__(
        self, model_path: Path, *, name: str, version: str, num_threads: int = 2, min_score: float = 0.05
    ) -> None:
        if not model_path.is_file():
            raise ModelError(f"model file not found: {model_path}")
        try:
            self._interp = Interpreter(model_path=str(model_path), num_threads=num_threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load {model_path}: {exc}") from exc
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        shape = tuple(int(d) for d in inp["shape"])
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ModelError(f"{model_path}: unexpected input shape {shape}")
        if tuple(int(d) for d in out["shape"])[-1] != 6:
            raise ModelError(f"{model_path}: unexpected output shape {out['shape']}")
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype = inp["dtype"]
        self._in_quant = inp.get("quantization", (0.0, 0))
        self._out_quant = out.get("quantization", (0.0, 0))
        self._out_dtype = out["dtype"]
        self.name, self.version = name, version
        self.size = shape[1]
        self.input_size = (self.size, self.size)
        self.min_score = min_score

    @classmethod
    def from_package(
        cls, variant: str = "fp32", *, num_threads: int = 2, min_score: float = 0.05, models_dir: Path = MODELS_DIR
    ) -> CenterNetDetector:
        return cls(
            models_dir / f"centernet_{variant}.tflite",
            name=f"centernet-{variant}",
            version=model_version(variant, models_dir),
            num_threads=num_threads,
            min_score=min_score,
        )

    def _input(self, rgb: Image) -> npt.NDArray[Any]:
        x = rgb.astype(np.float32)[None]
        if self._in_dtype in (np.uint8, np.int8):
            scale, zero = self._in_quant
            info = np.iinfo(self._in_dtype)
            q: npt.NDArray[Any] = np.clip(np.round(x / (scale or 1.0) + zero), info.min, info.max)
            return q.astype(self._in_dtype)
        return x

    def raw(self, frame_bgr: Image, roi: Roi | None = None) -> tuple[Image, Any]:
        """The model's [100, 6] output for the letterboxed region, and the letterbox."""
        lb = letterbox(frame_bgr, roi, self.size)
        rgb = lb.image[:, :, ::-1]
        self._interp.set_tensor(self._in_index, self._input(rgb))
        self._interp.invoke()
        out = self._interp.get_tensor(self._out_index)[0]
        if self._out_dtype in (np.uint8, np.int8):
            scale, zero = self._out_quant
            out = (out.astype(np.float32) - zero) * scale
        return np.asarray(out, np.float32), lb

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
