"""A TensorFlow-Serving-compatible gRPC server in Python, for machines without the real one.

This is **not** TensorFlow Serving: the ``tensorflow_model_server`` binary is not on the package
registries this project builds from. It answers the same gRPC API (``PredictionService.Predict``,
``PredictionService.GetModelMetadata``, ``ModelService.GetModelStatus``) from the same
``<base>/<model>/<version>/saved_model.pb`` layout, with TF Serving's status codes and messages,
so clients written against it work unchanged with the ``tensorflow/serving`` image used by
docker compose. Differences: no batching scheduler, no version policy (every version on disk
can be requested, loaded on first use), no REST API, no model config file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from pipeline.errors import LocalStackError, ModelError
from pipeline.model_server.servables import (
    WARM_UP_BATCHES,
    BadRequest,
    ModelRepository,
    ServableNotFound,
    SignatureNotFound,
)

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"
R = TypeVar("R")


def _answer(context: grpc.ServicerContext, call: Callable[[], R]) -> R:
    """Run one RPC body, turning our errors into the status codes TF Serving uses."""
    try:
        return call()
    except ServableNotFound as exc:
        context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    except BadRequest as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except SignatureNotFound as exc:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    except ModelError as exc:
        log.exception("model error")
        context.abort(grpc.StatusCode.INTERNAL, str(exc))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _version(spec: model_pb2.ModelSpec) -> int | None:
    # version_label ("stable", "canary") needs a model config file, which we do not read.
    if spec.WhichOneof("version_choice") == "version_label":
        raise ServableNotFound(f"Servable not found for request: Labeled({spec.name}, {spec.version_label})")
    return spec.version.value if spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:
        return _answer(context, lambda: self._predict(request))

    def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        servable = self.repository.get(spec.name, _version(spec))
        signature_name = spec.signature_name or DEFAULT_SIGNATURE
        inputs = {}
        for alias, proto in request.inputs.items():
            try:
                inputs[alias] = tf.make_ndarray(proto)
            except (TypeError, ValueError) as exc:
                raise BadRequest(f"tensor parsing error: {alias}") from exc
        outputs = servable.run(signature_name, inputs, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> Any:
        return _answer(context, lambda: self._metadata(request))

    def _metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        # Messages as in TF Serving's get_model_metadata_impl.cc.
        if not request.metadata_field:
            raise BadRequest("GetModelMetadataRequest must specify at least one metadata_field")
        for name in request.metadata_field:
            if name != SIGNATURE_DEF_FIELD:
                raise BadRequest(f"Metadata field {name} is not supported")
        if not request.model_spec.name:
            raise BadRequest("Missing ModelSpec")
        servable = self.repository.get(request.model_spec.name, _version(request.model_spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(sig)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext) -> Any:
        return _answer(context, lambda: self._status(request))

    def _status(self, request: get_model_status_pb2.GetModelStatusRequest) -> Any:
        name = request.model_spec.name
        version = _version(request.model_spec)
        versions = self.repository.versions(name)
        if not versions:
            raise ServableNotFound(f"Could not find any versions of model {name}")
        if version is not None and version not in versions:
            raise ServableNotFound(f"Could not find version {version} of model {name}")
        # The default version is what a request without a version gets: make sure it is loaded.
        self.repository.get(name, version)
        wanted = [version] if version is not None else self.repository.loaded_versions(name)
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in wanted:
            status = response.model_version_status.add()
            status.version = v
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response


class TFServingCompatServer:
    """gRPC server with the TF Serving API over ``model_base_path``; see the module doc."""

    def __init__(
        self, model_base_path: Path | str, host: str = "127.0.0.1", port: int = 8500, max_workers: int = 8
    ) -> None:
        self.repository = ModelRepository(Path(model_base_path))
        self.host = host
        self.port = port
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tfserving-compat"),
            # 512x512x3 float32 frames in batches: lift gRPC's 4 MiB default message cap.
            options=[
                ("grpc.max_receive_message_length", 256 << 20),
                ("grpc.max_send_message_length", 256 << 20),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.repository), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusServicer(self.repository), self._server)

    def preload(self) -> dict[str, list[int]]:
        """Load the highest version of every model so the first Predict is not slowed by a load."""
        served: dict[str, list[int]] = {}
        for name in self.repository.model_names():
            try:
                self.repository.get(name, warm_up_batches=WARM_UP_BATCHES)
            except ModelError:
                # A version still being written (or a broken one) must not keep the others
                # offline: a failed load is retried on the next request for it.
                log.exception("cannot preload model %s; will retry on first request", name)
                continue
            served[name] = self.repository.versions(name)
        return served

    def start(self) -> int:
        """Bind and serve; returns the port (the one chosen when ``port`` was 0)."""
        bound: int = self._server.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            raise LocalStackError(f"cannot bind gRPC on {self.host}:{self.port}")
        self.port = bound
        self._server.start()
        return bound

    def stop(self, grace_s: float = 2.0) -> None:
        self._server.stop(grace_s).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()
