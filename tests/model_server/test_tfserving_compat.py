"""The TF-Serving-compatible server, spoken to with the real ``tensorflow_serving`` client stubs.

Protocol tests run against tiny SavedModels made here (two versions, two signatures); the last
tests run the repo's CenterNet model through the ``model_server`` fixture (a child process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from pipeline.local_stack.model_server import ModelServerProcess
from pipeline.model_server.tfserving_compat import TFServingCompatServer
from pipeline.settings import SAMPLE_CLIP

pytestmark = pytest.mark.integration


# tensorflow ships no type hints (pyproject's mypy override): tf.Module and tf.function are Any.
class _Tiny(tf.Module):  # type: ignore[misc]
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = tf.Variable(factor)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])  # type: ignore[untyped-decorator]
    def scale(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * self.factor, "total": tf.reduce_sum(x, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="n")])  # type: ignore[untyped-decorator]
    def plus_one(self, n: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"m": n + 1}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("models")
    for version, factor in ((1, 2.0), (2, 3.0)):
        module = _Tiny(factor)
        tf.saved_model.save(
            module,
            str(base / "tiny" / str(version)),
            signatures={"serving_default": module.scale, "plus_one": module.plus_one},
        )
    (base / "tiny" / "notaversion").mkdir()  # ignored, as TF Serving ignores non-numeric dirs
    return base


@pytest.fixture(scope="module")
def channel(tiny_base: Path) -> Iterator[grpc.Channel]:
    server = TFServingCompatServer(tiny_base, port=0)
    assert server.preload() == {"tiny": [1, 2]}
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch
    finally:
        server.stop(0)


def _predict(
    channel: grpc.Channel, inputs: dict[str, Any], name: str = "tiny", version: int | None = None, signature: str = ""
) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if signature:
        request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, timeout=10)


def _code(exc: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return exc.value.code()


def test_predict_latest_version_by_default(channel: grpc.Channel) -> None:
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    response = _predict(channel, {"x": x})
    assert response.model_spec.name == "tiny"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), x * 3)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["total"]), [6, 15])


def test_predict_honours_version_and_signature(channel: grpc.Channel) -> None:
    x = np.ones((1, 3), np.float32)
    response = _predict(channel, {"x": x}, version=1)
    assert response.model_spec.version.value == 1
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), x * 2)
    response = _predict(channel, {"n": np.array([1, 2], np.int32)}, signature="plus_one")
    assert response.model_spec.signature_name == "plus_one"
    assert tf.make_ndarray(response.outputs["m"]).tolist() == [2, 3]


def test_unknown_model_and_version_are_not_found(channel: grpc.Channel) -> None:
    x = np.ones((1, 3), np.float32)
    with pytest.raises(grpc.RpcError) as exc:
        _predict(channel, {"x": x}, name="nope")
    assert _code(exc) == grpc.StatusCode.NOT_FOUND
    assert "Servable not found for request: Latest(nope)" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        _predict(channel, {"x": x}, version=7)
    assert _code(exc) == grpc.StatusCode.NOT_FOUND
    assert "Specific(tiny, 7)" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        _predict(channel, {"x": x}, name="../tiny")
    assert _code(exc) == grpc.StatusCode.NOT_FOUND


def test_unknown_signature_is_failed_precondition_like_tf_serving(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        _predict(channel, {"x": np.ones((1, 3), np.float32)}, signature="nope")
    assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
    assert exc.value.details() == 'Serving signature key "nope" not found.'


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"z": np.ones((1, 3), np.float32)}, "input tensor alias not found in signature: z"),
        ({"x": np.ones((1, 3), np.float32), "z": np.ones(1)}, "input size does not match signature: 2!=1"),
        ({"x": np.ones((1, 3), np.float64)}, ""),  # wrong dtype
        ({"x": np.ones((1, 4), np.float32)}, ""),  # wrong shape
    ],
)
def test_bad_inputs_are_invalid_argument(channel: grpc.Channel, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        _predict(channel, inputs)
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert message in exc.value.details()


def test_output_filter(channel: grpc.Channel) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 3), np.float32)))
    request.output_filter.append("total")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    assert list(stub.Predict(request, timeout=10).outputs) == ["total"]
    request.output_filter.append("bogus")
    with pytest.raises(grpc.RpcError) as exc:
        stub.Predict(request, timeout=10)
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT


def test_get_model_metadata_returns_signature_def_map(channel: grpc.Channel) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.GetModelMetadata(request, timeout=10)
    assert response.model_spec.version.value == 2
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    sig = signature_map.signature_def["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert sig.inputs["x"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in sig.inputs["x"].tensor_shape.dim] == [-1, 3]
    assert set(sig.outputs) == {"y", "total"}
    assert "plus_one" in signature_map.signature_def

    request.metadata_field[:] = ["nonsense"]
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetModelMetadata(request, timeout=10)
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT


def test_get_model_status(channel: grpc.Channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    states = {s.version: s.state for s in stub.GetModelStatus(request, timeout=10).model_version_status}
    assert states[2] == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetModelStatus(request, timeout=10)
    assert _code(exc) == grpc.StatusCode.NOT_FOUND


def test_new_version_is_picked_up_while_serving(tmp_path: Path) -> None:
    server = TFServingCompatServer(tmp_path, port=0)  # no models yet
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.RpcError):
                _predict(ch, {"x": np.ones((1, 3), np.float32)}, name="late")
            module = _Tiny(5.0)
            tf.saved_model.save(module, str(tmp_path / "late" / "1"), signatures={"serving_default": module.scale})
            response = _predict(ch, {"x": np.ones((1, 3), np.float32)}, name="late")
            np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [[5, 5, 5]])
    finally:
        server.stop(0)


# ------------------------------------------------------------------ the real model, child process


def test_centernet_metadata_from_the_model_server_process(model_server: ModelServerProcess) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "centernet"
    with grpc.insecure_channel(model_server.address) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        response = stub.GetModelMetadata(request, timeout=10)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    sig = signature_map.signature_def["serving_default"]
    assert sig.inputs["images"].dtype == tf.float32.as_datatype_enum
    # the latest version: 2, re-exported with a real batch dimension and a crop-sized input
    assert response.model_spec.version.value == 2
    assert [d.size for d in sig.inputs["images"].tensor_shape.dim] == [-1, 256, 256, 3]
    assert "detections" in sig.outputs


def test_centernet_predict_on_a_real_frame(model_server: ModelServerProcess) -> None:
    import cv2

    capture = cv2.VideoCapture(str(SAMPLE_CLIP))
    try:
        for _ in range(30):
            ok, frame = capture.read()
            assert ok
    finally:
        capture.release()
    rgb = cv2.cvtColor(cv2.resize(frame, (512, 512)), cv2.COLOR_BGR2RGB).astype(np.float32)
    with grpc.insecure_channel(model_server.address) as ch:
        response = _predict(ch, {"images": rgb[None]}, name="centernet", version=1)
    assert response.model_spec.version.value == 1
    detections = tf.make_ndarray(response.outputs["detections"])
    assert detections.shape == (1, 100, 6)
    people = detections[0][(detections[0, :, 5] == 0) & (detections[0, :, 4] > 0.3)]
    assert len(people) >= 1, detections[0][:10]
    assert ((people[:, :4] >= -1) & (people[:, :4] <= 513)).all()


def test_preload_warms_the_micro_batch_sizes(tiny_base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A free batch dimension is warmed at each micro-batch size (the CPU kernels prepare per
    shape on first use); a load in the request path warms batch 1 only."""
    from pipeline.model_server.servables import WARM_UP_BATCHES, ModelRepository, Servable

    seen: list[tuple[str, tuple[int, ...]]] = []
    real_run = Servable.run

    def spy(self: Servable, signature_name: str, inputs: dict[str, Any], output_filter: list[str]) -> Any:
        seen.extend((signature_name, v.shape) for v in inputs.values())
        return real_run(self, signature_name, inputs, output_filter)

    monkeypatch.setattr(Servable, "run", spy)
    repo = ModelRepository(tiny_base)
    repo.get("tiny", 2, warm_up_batches=WARM_UP_BATCHES)
    assert [shape for name, shape in seen if name == "serving_default"] == [(b, 3) for b in WARM_UP_BATCHES]
    seen.clear()
    repo.get("tiny", 1)
    assert [shape for name, shape in seen if name == "serving_default"] == [(1, 3)]
