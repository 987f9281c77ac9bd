"""SavedModels laid out the way TensorFlow Serving reads them: ``<base>/<model>/<version>/``.

A version is a directory named by an integer that holds ``saved_model.pb``. The highest version
is the default; a request may name another one. Versions load on first use and stay loaded,
and the directory is listed on every lookup, so a version dropped in while the server runs is
picked up (TF Serving polls its directory the same way).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from pipeline.errors import ModelError

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
WARM_UP_BATCHES = tuple(range(1, 9))  # the cloud's micro-batches: capped near 8 by its latency bound


class ServableNotFound(ModelError):
    """No such model or version under the base path (gRPC NOT_FOUND)."""


class BadRequest(ModelError):
    """The request does not fit the signature (gRPC INVALID_ARGUMENT)."""


class SignatureNotFound(ModelError):
    """No signature of that name (gRPC FAILED_PRECONDITION, as TF Serving answers)."""


def read_signature_defs(version_dir: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the ``serve`` MetaGraph, read from saved_model.pb itself."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    for meta_graph in saved.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ModelError(f"{version_dir}: no MetaGraph tagged '{SERVE_TAG}'")


@dataclass
class Servable:
    """One loaded version of one model."""

    name: str
    version: int
    path: Path
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]
    loaded: Any = field(repr=False)

    def run(self, signature_name: str, inputs: dict[str, NDArray[Any]], output_filter: list[str]) -> dict[str, Any]:
        """Run a signature on numpy inputs; returns numpy outputs by alias."""
        sig = self.signature_defs.get(signature_name)
        if sig is None or signature_name not in self.loaded.signatures:
            raise SignatureNotFound(f'Serving signature key "{signature_name}" not found.')
        _check_inputs(sig, inputs)
        wanted = _check_output_filter(sig, output_filter)
        fn = self.loaded.signatures[signature_name]
        try:
            # Convert with the signature's dtype check done by TF: a float64 array sent for a
            # float32 input fails here, as the real server's Session::Run would.
            outputs = fn(**{alias: tf.constant(value) for alias, value in inputs.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise BadRequest(_first_line(str(exc))) from exc
        return {alias: outputs[alias].numpy() for alias in wanted}

    def warm_up(self, batch_sizes: tuple[int, ...] = WARM_UP_BATCHES) -> None:
        """Run each signature on zeros before serving: batch 1, and the usual micro-batch sizes
        when the batch dimension is free.

        The first call of a loaded function traces and optimises its graph, and the CPU kernels
        (oneDNN) prepare themselves per input shape on the first call with it: seconds per shape
        on a small, busy CPU. TF Serving does the same with warm-up records, so the first client
        (the first alerts of a demo) is not the one that waits.
        """
        for signature_name, sig in self.signature_defs.items():
            if signature_name not in self.loaded.signatures:
                continue
            free_batch = all(
                not info.tensor_shape.unknown_rank and info.tensor_shape.dim and info.tensor_shape.dim[0].size < 0
                for info in sig.inputs.values()
            )
            for batch in batch_sizes if free_batch else (1,):
                zeros = {}
                for alias, info in sig.inputs.items():
                    if info.tensor_shape.unknown_rank:
                        break
                    shape = [batch if i == 0 and d.size < 0 else (1 if d.size < 0 else d.size)
                             for i, d in enumerate(info.tensor_shape.dim)]  # fmt: skip
                    zeros[alias] = np.zeros(shape, tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
                else:
                    try:
                        self.run(signature_name, zeros, [])
                    except ModelError as exc:
                        log.warning("warm-up of %s/%d %s failed: %s", self.name, self.version, signature_name, exc)
                        break


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "invalid input"


def _check_inputs(sig: meta_graph_pb2.SignatureDef, inputs: dict[str, NDArray[Any]]) -> None:
    # Same checks and messages as TF Serving's predict_util.cc PreProcessPrediction.
    sent, expected = sorted(inputs), sorted(sig.inputs)
    if len(sent) != len(expected):
        extra = sorted(set(sent) - set(expected))
        missing = sorted(set(expected) - set(sent))
        raise BadRequest(
            f"input size does not match signature: {len(sent)}!={len(expected)} len({{{','.join(sent)}}}) != "
            f"len({{{','.join(expected)}}}). Sent extra: {{{','.join(extra)}}}. "
            f"Missing but required: {{{','.join(missing)}}}."
        )
    for alias in sent:
        if alias not in sig.inputs:
            raise BadRequest(
                f"input tensor alias not found in signature: {alias}. "
                f"Inputs expected to be in the set {{{','.join(expected)}}}."
            )
        _check_shape(alias, sig.inputs[alias], inputs[alias].shape)


def _check_shape(alias: str, info: meta_graph_pb2.TensorInfo, shape: tuple[int, ...]) -> None:
    # Stricter than TF Serving, which feeds any shape and lets an op fail later (or not at all,
    # for element-wise models): a frame of the wrong size is a client bug worth a clear message.
    if info.tensor_shape.unknown_rank:
        return
    dims = [d.size for d in info.tensor_shape.dim]
    if len(dims) != len(shape) or any(d not in (-1, s) for d, s in zip(dims, shape, strict=True)):
        raise BadRequest(f"input {alias} has shape {list(shape)}, signature expects {dims} (-1: any size)")


def _check_output_filter(sig: meta_graph_pb2.SignatureDef, output_filter: list[str]) -> list[str]:
    if not output_filter:
        return sorted(sig.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in sig.outputs:
            raise BadRequest(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{','.join(sorted(sig.outputs))}}}."
            )
        if alias in seen:
            raise BadRequest(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)


class ModelRepository:
    """Finds and loads versions under ``base_path``; thread-safe."""

    def __init__(self, base_path: Path) -> None:
        self.base_path = Path(base_path).resolve()
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, int], Servable] = {}

    def model_names(self) -> list[str]:
        if not self.base_path.is_dir():
            return []
        return sorted(p.name for p in self.base_path.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        """Versions on disk, ascending. A name that is not a plain directory name has none."""
        if not name or "/" in name or name in (".", ".."):
            return []
        model_dir = self.base_path / name
        if not model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file())

    def loaded_versions(self, name: str) -> list[int]:
        with self._lock:
            return sorted(v for (n, v) in self._loaded if n == name)

    def get(self, name: str, version: int | None = None, warm_up_batches: tuple[int, ...] = (1,)) -> Servable:
        """The servable for ``name`` at ``version`` (None: the highest on disk), loading it if needed.

        A load in the request path warms batch 1 only (the request waits for it); the server's
        preload warms the micro-batch sizes too (``WARM_UP_BATCHES``)."""
        versions = self.versions(name)
        if version is None:
            if not versions:
                raise ServableNotFound(f"Servable not found for request: Latest({name})")
            version = versions[-1]
        elif version not in versions:
            raise ServableNotFound(f"Servable not found for request: Specific({name}, {version})")
        key = (name, version)
        # One lock for loads too: two first requests must not load the same model twice, and a
        # load takes seconds only once per version.
        with self._lock:
            servable = self._loaded.get(key)
            if servable is None:
                servable = self._load(name, version, warm_up_batches)
                self._loaded[key] = servable
        return servable

    def _load(self, name: str, version: int, warm_up_batches: tuple[int, ...]) -> Servable:
        path = self.base_path / name / str(version)
        began = time.monotonic()
        try:
            signature_defs = read_signature_defs(path)
            loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
        except (OSError, ValueError, tf.errors.OpError) as exc:
            raise ModelError(f"cannot load {path}: {exc}") from exc
        servable = Servable(name, version, path, signature_defs, loaded)
        servable.warm_up(warm_up_batches)
        log.info("loaded model %s version %d from %s in %.2f s", name, version, path, time.monotonic() - began)
        return servable
