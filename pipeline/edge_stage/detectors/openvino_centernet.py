"""CenterNet on OpenVINO's CPU runtime: the same committed ``.tflite`` file, another engine.

``edge.detector_runtime: openvino`` runs the packaged float model with OpenVINO (read straight
from the ``.tflite``, no conversion step, nothing fetched). Why a second runtime: on CPUs with
bfloat16 arithmetic (AVX512-BF16 / AMX: Xeon since Sapphire Rapids, EPYC since Zen 4) OpenVINO
runs the network in bf16 at about twice LiteRT's float speed (2-core build machine, one thread:
512 px 43 -> 22 ms, 384 px 23 -> 12 ms per frame with decoding; in f32 it is only 1.1-1.2x
faster). ``edge.detector_precision`` picks ``bf16`` or ``f32``; where the CPU has no bf16,
OpenVINO runs f32 and :attr:`OpenVinoCenterNet.precision` says so. The accuracy of each choice
is in benchmarks/RESULTS.md (accuracy: detection and tracking rows per runtime).

**The cut.** The file's own post-processing (top 100 over every class and cell, then gathers)
runs ~200 ms in OpenVINO, ten times the network. So the graph is cut where the decoding starts,
at two tensors defined by what the decoder does with them, not by op names (which the TFLite
front end renames between releases):

* the class heatmap is the input of the one ``MaxPool`` (CenterNet's 3x3 peak test);
* the box sizes are the data input of the ``Gather`` that picks [H*W, 4] rows per peak (already
  scaled by the graph's x16: OpenVINO folds that multiply into the convolution).

:func:`decode_heads` then does in numpy what the graph did (peak test, top 100, boxes), restricted
to cells above the score floor: equal to LiteRT's output for every row above it (unit test,
max difference 0.003 px in f32). OpenVINO is pinned (pyproject) because the cut depends on how
its TFLite front end lays the graph out; a release that changes it fails the cut with a
:class:`~pipeline.errors.ModelError` at start, not with wrong boxes.

Telemetry: ``openvino-telemetry`` ships with the wheel; the runtime (``Core.read_model``,
``compile_model``, inference) sends nothing, only the model-conversion tools do.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.errors import ModelError

TOP_K = 100  # what the committed graph keeps
PEAK_KERNEL = np.ones((3, 3), np.uint8)  # the graph's 3x3 max-pool peak test
PRECISIONS = ("f32", "bf16")

_core: Any = None
_core_lock = threading.Lock()


def _openvino() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:  # the edge extra installs it; a hand-made environment may not
        raise ModelError("edge.detector_runtime is openvino but the openvino package is missing") from exc
    return ov


def core() -> Any:
    """The process's one OpenVINO ``Core`` (it loads the CPU plugin: created once, on first use)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = _openvino().Core()
        return _core


def heads_model(model_path: Path) -> Any:
    """The network of ``model_path`` up to its two heads: outputs (heatmap, sizes x16)."""
    ov = _openvino()
    if not model_path.is_file():
        raise ModelError(f"model file not found: {model_path}")
    try:
        model = core().read_model(str(model_path))
    except RuntimeError as exc:
        raise ModelError(f"openvino cannot read {model_path}: {exc}") from exc
    ops = model.get_ordered_ops()
    pools = [op.input_value(0) for op in ops if op.get_type_name() == "MaxPool"]
    sizes = [
        op.input_value(0)
        for op in ops
        if op.get_type_name() == "Gather"
        and op.get_input_partial_shape(0).rank.get_length() in (2, 3)  # [H*W, 4] or [1, H*W, 4]
        and op.get_input_partial_shape(0)[-1].get_length() == 4
    ]
    if len(pools) != 1 or len(sizes) != 1:
        raise ModelError(
            f"{model_path.name}: expected one peak MaxPool and one [H*W, 4] size Gather in the graph,"
            f" found {len(pools)} and {len(sizes)} (openvino {ov.__version__}; use detector_runtime litert)"
        )
    return ov.Model([pools[0], sizes[0]], model.get_parameters(), "centernet-heads")


def decode_heads(
    heat: npt.NDArray[np.float32],
    sizes: npt.NDArray[np.float32],
    input_size: int,
    floor: float,
    top_k: int = TOP_K,
) -> npt.NDArray[np.float32]:
    """CenterNet's decoding of one image: rows x1, y1, x2, y2 (input px), score, class.

    ``heat``: [C, H, W] class scores after the sigmoid; ``sizes``: [H*W, 4] distances from the
    centre to the left, top, right and bottom edges in input px. A cell is a detection when it is
    the maximum of its 3x3 neighbourhood in its class (ties included, as the graph's equality test)
    and scores at least ``floor``; the ``top_k`` best are kept, best first.
    """
    width = heat.shape[2]
    stride = input_size / width
    cls, ys, xs = np.nonzero(heat >= floor)
    if cls.size == 0:
        return np.zeros((0, 6), np.float32)
    keep = np.zeros(cls.size, bool)
    for c in np.unique(cls):
        at = cls == c
        local_max = cv2.dilate(heat[c], PEAK_KERNEL)  # border = -inf, as max_pool's SAME padding
        keep[at] = heat[c, ys[at], xs[at]] >= local_max[ys[at], xs[at]]
    cls, ys, xs = cls[keep], ys[keep], xs[keep]
    scores = heat[cls, ys, xs]
    best = np.argsort(-scores, kind="stable")[:top_k]
    cls, ys, xs, scores = cls[best], ys[best], xs[best], scores[best]
    edges = sizes[ys * width + xs]  # [K, 4]
    cx, cy = xs * stride, ys * stride
    out: npt.NDArray[np.float32] = np.stack(
        [cx - edges[:, 0], cy - edges[:, 1], cx + edges[:, 2], cy + edges[:, 3], scores, cls.astype(np.float32)],
        axis=1,
    ).astype(np.float32)
    return out


class OpenVinoCenterNet:
    """One compiled CenterNet (weights held once) and the infer requests that run it.

    ``threads``: inference threads per request; ``precision``: ``f32`` or ``bf16`` (a hint:
    OpenVINO uses f32 on CPUs without bf16; :attr:`precision` is what it chose).
    """

    def __init__(self, model_path: Path, threads: int = 1, precision: str = "f32") -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
            # Several cameras' threads share the cores: pinning one request's thread to a core
            # would make them queue behind each other.
            "ENABLE_CPU_PINNING": False,
        }
        try:
            self._compiled = core().compile_model(heads_model(model_path), "CPU", config)
        except RuntimeError as exc:
            raise ModelError(f"openvino cannot compile {model_path}: {exc}") from exc
        shape = [int(d) for d in self._compiled.input(0).get_shape()]
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
            raise ModelError(f"{model_path}: unexpected input shape {shape}")
        self.size = shape[1]
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: "f32" / "bf16"
        self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        heat = [int(d) for d in self._compiled.output(0).get_shape()]
        # [1, C, H, W] as OpenVINO lays it out today (C = H = W = 80 at 320 px reads as that
        # too); [1, H, W, C] is the TFLite order
        self._channels_last = heat[2] != heat[3]

    def runner(self) -> OpenVinoRunner:
        return OpenVinoRunner(self)


class OpenVinoRunner:
    """One infer request of a compiled model: not thread-safe, one caller at a time (pooled)."""

    def __init__(self, model: OpenVinoCenterNet) -> None:
        self._model = model
        self._request = model._compiled.create_infer_request()
        self.size, self.precision = model.size, model.precision

    def run(self, x: npt.NDArray[Any], floor: float) -> npt.NDArray[np.float32]:
        """``x``: float32 [1, S, S, 3] raw 0-255 RGB -> [K, 6] detections above ``floor``."""
        result = self._request.infer({0: x})
        heat = np.asarray(result[0])[0]
        sizes = np.asarray(result[1]).reshape(-1, 4)
        if self._model._channels_last:
            heat = np.moveaxis(heat, -1, 0)
        return decode_heads(np.ascontiguousarray(heat), sizes, self.size, floor)
