"""CenterNet-MobileNetV3 (COCO-80): the edge's main detector, run with ai-edge-litert (default) or
OpenVINO (``edge.detector_runtime``, :mod:`pipeline.edge_stage.detectors.openvino_centernet`).

Model files: ``pipeline/edge_stage/models/centernet_fp32.tflite`` and ``centernet_int8.tflite``
(512 px), ``centernet_fp32_384.tflite`` and ``centernet_fp32_320.tflite`` (the same network re-sized
by ``scripts/centernet_variants.py``), described by ``models.json`` (version, source). Tensors:
input float32 [1, S, S, 3] raw 0-255 RGB; output [1, 100, 6] = x1, y1, x2, y2 (S-px space), score,
class (0-based COCO-80). The analysed region (motion ROI or full frame) is letterboxed into the
S-px input, top-left aligned.

Runners (a LiteRT interpreter or an OpenVINO infer request): a detector owns one, or leases one
from an :class:`InterpreterPool` shared by the cameras of a node (``make_detector`` does that
when a node runs several cameras): K single-threaded interpreters for K cores serve any number
of cameras, so N cameras cost K model copies and activation arenas instead of N, and never run
more inference threads than cores.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter

from pipeline.edge_stage.capture import Image
from pipeline.edge_stage.detectors.base import Detector, Roi, clip_box, letterbox
from pipeline.errors import ModelError
from pipeline.operators.coco import COCO80, label_of
from pipeline.operators.tracking import Detection

if TYPE_CHECKING:
    from pipeline.edge_stage.detectors.openvino_centernet import OpenVinoRunner

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


Runner = Union[LiteRtRunner, "OpenVinoRunner"]


def load_runners(model_path: Path, count: int, num_threads: int, runtime: str, precision: str) -> list[Runner]:
    """``count`` runners of one model file on ``runtime`` (OpenVINO: one compiled model, its
    weights held once, and ``count`` infer requests; LiteRT: ``count`` interpreters)."""
    if runtime == "openvino":
        from pipeline.edge_stage.detectors.openvino_centernet import OpenVinoCenterNet

        model = OpenVinoCenterNet(model_path, num_threads, precision)
        return [model.runner() for _ in range(count)]
    if runtime != "litert":
        raise ModelError(f"unknown detector runtime {runtime!r} (litert or openvino)")
    return [LiteRtRunner(model_path, num_threads) for _ in range(count)]


class InterpreterPool:
    """``size`` runners (interpreters or infer requests) of one model file; a detect call leases
    one, waiting while all are busy.

    Shared by every camera thread of a node through :meth:`shared`, released when the last user
    closes. Measured (benchmarks/RESULTS.md, scale): one single-threaded interpreter per core
    serves the cameras of a node with less CPU and memory than one 2-thread interpreter per camera.
    """

    _shared: dict[tuple[str, int, int, str, str], InterpreterPool] = {}
    _shared_lock = threading.Lock()

    def __init__(
        self, model_path: Path, size: int, num_threads: int = 1, runtime: str = "litert", precision: str = "f32"
    ) -> None:
        self.model_path, self.size, self.num_threads = model_path, size, num_threads
        self._free: queue.Queue[Runner] = queue.Queue()
        for runner in load_runners(model_path, size, num_threads, runtime, precision):
            self._free.put(runner)
        self.users = 0
        self.key = (str(model_path), size, num_threads, runtime, precision)

    @classmethod
    def shared(
        cls, model_path: Path, size: int, num_threads: int = 1, runtime: str = "litert", precision: str = "f32"
    ) -> InterpreterPool:
        """The node-wide pool for this file, size and runtime (created on first use); counts the new user."""
        key = (str(model_path), size, num_threads, runtime, precision)
        with cls._shared_lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = cls(model_path, size, num_threads, runtime, precision)
            pool.users += 1
            return pool

    def release_user(self) -> None:
        with self._shared_lock:
            self.users -= 1
            if self.users <= 0 and self._shared.get(self.key) is self:
                del self._shared[self.key]

    def any(self) -> Runner:
        """A runner to read the model's size from (not to run)."""
        runner = self._free.get()
        self._free.put(runner)
        return runner

    @contextmanager
    def lease(self) -> Iterator[Runner]:
        runner = self._free.get()
        try:
            yield runner
        finally:
            self._free.put(runner)


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
    ) -> None:
        self._pool = pool
        self._runner: Runner | None = None
        if pool is None:
            self._runner = load_runners(model_path, 1, num_threads, runtime, precision)[0]
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
        """A packaged model; ``pool_size`` > 0: lease from the node's shared pool of that many."""
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
        )

    def raw(self, frame_bgr: Image, roi: Roi | None = None) -> tuple[Image, Any]:
        """The model's rows (x1, y1, x2, y2, score, class) for the letterboxed region, and the letterbox."""
        lb = letterbox(frame_bgr, roi, self.size)
        x = lb.image[:, :, ::-1].astype(np.float32)[None]
        if self._runner is not None:
            return self._runner.run(x, self.min_score), lb
        assert self._pool is not None
        with self._pool.lease() as runner:
            return runner.run(x, self.min_score), lb

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
