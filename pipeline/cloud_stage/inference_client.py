"""TF Serving gRPC client for the heavy model (works with ``tensorflow/serving`` and our
``pipeline model-server``).

At start-up :meth:`InferenceClient.connect` asks GetModelMetadata for the signature and checks
it against the contract (docs/CONTRACTS.md): input ``images`` float32 [N,S,S,3] (any square size
S: version 1 takes 512, version 2 256, sized for crops), output ``detections`` float32
[N,100,6] in S-px space. The served S is :attr:`ModelInfo.input_size`; callers letterbox to it.
A mismatch is a :class:`ModelError` (not retriable: wrong model files); an unreachable server is
:class:`InferenceUnavailable` (retriable).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

import grpc
import numpy as np
import numpy.typing as npt
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from pipeline.errors import InferenceUnavailable, ModelError
from pipeline.settings import ModelServerSettings

log = logging.getLogger(__name__)

INPUT_NAME: Final = "images"
OUTPUT_NAME: Final = "detections"
INPUT_SHAPE: Final = (-1, -1, -1, 3)  # -1: any batch size; height == width checked apart
OUTPUT_SHAPE: Final = (-1, 100, 6)
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: int
    max_batch: int | None  # None: any batch size; 1 when the signature fixes N=1
    input_size: int = 512  # S of the [N,S,S,3] input: the side crops are letterboxed to

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"


def _dims(shape: tensor_shape_pb2.TensorShapeProto) -> tuple[int, ...]:
    return tuple(int(d.size) for d in shape.dim)


def _shape_ok(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    return len(got) == len(want) and all(w in (g, -1) or g == -1 for g, w in zip(got[1:], want[1:], strict=True))


def to_tensor_proto(batch: FloatArray) -> tensor_pb2.TensorProto:
    arr = np.ascontiguousarray(batch, dtype=np.float32)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in arr.shape])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=arr.tobytes())


def from_tensor_proto(t: tensor_pb2.TensorProto) -> FloatArray:
    shape = _dims(t.tensor_shape)
    if t.tensor_content:
        return np.frombuffer(t.tensor_content, np.float32).reshape(shape)
    return np.asarray(t.float_val, np.float32).reshape(shape)


class InferenceClient:
    """One grpc.aio channel to the model server; create and use it inside the event loop."""

    def __init__(self, settings: ModelServerSettings) -> None:
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._stub: prediction_service_pb2_grpc.PredictionServiceStub | None = None
        self.info: ModelInfo | None = None

    def _spec_into(self, spec: object) -> None:
        s = self.settings
        spec.name = s.model_name  # type: ignore[attr-defined]
        spec.signature_name = s.signature_name  # type: ignore[attr-defined]
        if s.model_version is not None:
            spec.version.value = s.model_version  # type: ignore[attr-defined]

    def _ensure_channel(self) -> prediction_service_pb2_grpc.PredictionServiceStub:
        if self._stub is None:
            opts = [
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 256 << 20),
                # find a restarted server within ~2 s (the circuit breaker paces the retries)
                ("grpc.initial_reconnect_backoff_ms", 500),
                ("grpc.min_reconnect_backoff_ms", 500),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ]
            self._channel = grpc.aio.insecure_channel(self.settings.address, options=opts)
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        return self._stub

    async def connect(self) -> ModelInfo:
        """Fetch and check the model metadata; raises ModelError or InferenceUnavailable."""
        stub = self._ensure_channel()
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec_into(req.model_spec)
        try:
            resp = await stub.GetModelMetadata(req, timeout=self.settings.timeout_s * 2)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise ModelError(
                    f"model {self.settings.model_name!r} not served at {self.settings.address}: {exc.details()}"
                ) from exc
            raise InferenceUnavailable(
                f"model server {self.settings.address}: {exc.code().name} {exc.details()}"
            ) from exc
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in resp.metadata or not resp.metadata["signature_def"].Unpack(sig_map):
            raise ModelError("model server returned no signature_def metadata")
        name = self.settings.signature_name
        if name not in sig_map.signature_def:
            raise ModelError(f"signature {name!r} not in {sorted(sig_map.signature_def)}")
        sig = sig_map.signature_def[name]
        max_batch = self._check_tensor(sig.inputs, INPUT_NAME, INPUT_SHAPE, "input")
        self._check_tensor(sig.outputs, OUTPUT_NAME, OUTPUT_SHAPE, "output")
        height, width = _dims(sig.inputs[INPUT_NAME].tensor_shape)[1:3]
        if height != width or height <= 0:
            raise ModelError(f"model input {INPUT_NAME!r} is {height}x{width}; want a fixed square size")
        self.info = ModelInfo(resp.model_spec.name or self.settings.model_name, resp.model_spec.version.value,
                              max_batch, height)  # fmt: skip
        log.info("heavy model %s at %s (batch %s, input %d px)", self.info.tag, self.settings.address,
                 max_batch or "any", height)  # fmt: skip
        return self.info

    @staticmethod
    def _check_tensor(tensors: object, key: str, want: tuple[int, ...], kind: str) -> int | None:
        if key not in tensors:  # type: ignore[operator]
            raise ModelError(f"model {kind} {key!r} missing; has {sorted(tensors)}")  # type: ignore[call-overload]
        info = tensors[key]  # type: ignore[index]
        if info.dtype != types_pb2.DT_FLOAT:
            raise ModelError(f"model {kind} {key!r} dtype {types_pb2.DataType.Name(info.dtype)}, want DT_FLOAT")
        got = _dims(info.tensor_shape)
        if info.tensor_shape.unknown_rank or not _shape_ok(got, want):
            raise ModelError(f"model {kind} {key!r} shape {list(got)}, want {list(want)} (-1 = any)")
        return None if got[0] == -1 else got[0]

    async def predict(self, batch: FloatArray, timeout_s: float | None = None) -> FloatArray:
        """[N,S,S,3] -> [N,100,6]; raises InferenceUnavailable on any RPC failure."""
        stub = self._ensure_channel()
        req = predict_pb2.PredictRequest(output_filter=[OUTPUT_NAME])
        self._spec_into(req.model_spec)
        req.inputs[INPUT_NAME].CopyFrom(to_tensor_proto(batch))
        try:
            resp = await stub.Predict(req, timeout=timeout_s or self.settings.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise InferenceUnavailable(f"Predict failed: {exc.code().name} {exc.details()}") from exc
        if OUTPUT_NAME not in resp.outputs:
            raise ModelError(f"Predict response lacks {OUTPUT_NAME!r}: {sorted(resp.outputs)}")
        out = from_tensor_proto(resp.outputs[OUTPUT_NAME])
        if out.shape[0] != batch.shape[0] or out.shape[1:] != OUTPUT_SHAPE[1:]:
            raise ModelError(f"Predict returned shape {out.shape} for a batch of {batch.shape[0]}")
        return out

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._stub = None
