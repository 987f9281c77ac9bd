"""The model directory follows TensorFlow Serving's layout rules (what tensorflow/serving loads).

models/<name>/<integer version>/saved_model.pb + variables/, a models.config text proto
(ModelServerConfig) naming those directories, and deploy/tfserving/batching_parameters.txt
parsing as BatchingParameters. The local TF-Serving-compatible server reads the same directory.
"""

from __future__ import annotations

import contextlib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,  # noqa: F401  (registers google/protobuf/wrappers.proto)
)

from pipeline.settings import REPO_ROOT

MODELS = REPO_ROOT / "models"
CONFIG = MODELS / "models.config"
BATCHING = REPO_ROOT / "deploy" / "tfserving" / "batching_parameters.txt"
CONTAINER_MODELS = PurePosixPath("/models")  # docker-compose.yml mounts ./models there


def _model_config() -> Any:  # a ModelServerConfig: tensorflow_serving's protos have no type hints
    if not CONFIG.is_file():
        pytest.skip("models/models.config does not exist yet (written with the model, scripts/build_models.py)")
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(CONFIG.read_text(), model_server_config_pb2.ModelServerConfig())


def _local_dir(base_path: str) -> Path:
    """base_path as TF Serving in the container sees it -> the directory in this repository."""
    p = PurePosixPath(base_path)
    if p.is_absolute():
        assert p.is_relative_to(CONTAINER_MODELS), f"base_path {base_path} is outside the /models mount"
        return MODELS / p.relative_to(CONTAINER_MODELS)
    return MODELS / p


@pytest.mark.unit
def test_models_config_names_servable_directories() -> None:
    config = _model_config()
    models = config.model_config_list.config
    assert models, "models.config lists no model"
    names = [m.name for m in models]
    assert len(names) == len(set(names))
    assert "centernet" in names  # ModelServerSettings.model_name and the compose health check
    for m in models:
        assert m.model_platform == "tensorflow", m.name
        base = _local_dir(m.base_path)
        versions = [d for d in base.iterdir() if d.is_dir() and d.name.isdigit()]
        assert versions, f"{base}: no integer version directory"
        for v in versions:
            assert (v / "saved_model.pb").is_file(), v
            assert (v / "variables").is_dir(), f"{v}: no variables/"
        policy = m.model_version_policy
        if policy.WhichOneof("policy_choice") == "specific":
            have = {int(v.name) for v in versions}
            assert set(policy.specific.versions) <= have


@pytest.mark.unit
def test_no_stray_entries_in_model_directories() -> None:
    _model_config()
    for model in (d for d in MODELS.iterdir() if d.is_dir()):
        for entry in model.iterdir():
            # TF Serving ignores non-numeric names, but a typo ("v1") would silently serve nothing.
            assert entry.name.isdigit() or not entry.is_dir(), f"{entry}: version directories are integers"


def _batching_parameters_class() -> type:
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

        batching_parameters: type = session_bundle_config_pb2.BatchingParameters  # untyped (no stubs)
        return batching_parameters
    except ImportError:
        pass
    # tensorflow-serving-api does not ship session_bundle_config_pb2: rebuild the message from
    # tensorflow_serving/servables/tensorflow/session_bundle_config.proto (field names, types).
    f = descriptor_pb2.FieldDescriptorProto
    fields = [
        ("max_batch_size", 1, f.TYPE_MESSAGE, ".google.protobuf.Int64Value", f.LABEL_OPTIONAL),
        ("batch_timeout_micros", 2, f.TYPE_MESSAGE, ".google.protobuf.Int64Value", f.LABEL_OPTIONAL),
        ("max_enqueued_batches", 3, f.TYPE_MESSAGE, ".google.protobuf.Int64Value", f.LABEL_OPTIONAL),
        ("num_batch_threads", 4, f.TYPE_MESSAGE, ".google.protobuf.Int64Value", f.LABEL_OPTIONAL),
        ("thread_pool_name", 5, f.TYPE_MESSAGE, ".google.protobuf.StringValue", f.LABEL_OPTIONAL),
        ("allowed_batch_sizes", 6, f.TYPE_INT64, None, f.LABEL_REPEATED),
        ("pad_variable_length_inputs", 7, f.TYPE_BOOL, None, f.LABEL_OPTIONAL),
        ("enable_large_batch_splitting", 9, f.TYPE_MESSAGE, ".google.protobuf.BoolValue", f.LABEL_OPTIONAL),
        ("max_execution_batch_size", 10, f.TYPE_MESSAGE, ".google.protobuf.Int64Value", f.LABEL_OPTIONAL),
    ]
    proto = descriptor_pb2.FileDescriptorProto(
        name="deploy_test/session_bundle_config.proto", package="deploy_test.serving",
        dependency=["google/protobuf/wrappers.proto"], syntax="proto3",
    )  # fmt: skip
    msg = proto.message_type.add(name="BatchingParameters")
    for name, number, typ, type_name, label in fields:
        field = msg.field.add(name=name, number=number, type=typ, label=label)
        if type_name:
            field.type_name = type_name
    # types-protobuf 4.25 leaves Default() and DescriptorPool's methods unannotated: the pool is untyped.
    pool = descriptor_pool.Default()  # type: ignore[no-untyped-call]
    with contextlib.suppress(TypeError):  # already added by an earlier call in this process
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("deploy_test.serving.BatchingParameters"))


@pytest.mark.unit
def test_batching_parameters_parse() -> None:
    params = text_format.Parse(BATCHING.read_text(), _batching_parameters_class()())
    assert params.max_batch_size.value >= 32  # >= ModelServerSettings.max_batch default: no client batch split
    assert params.batch_timeout_micros.value > 0
    sizes = list(params.allowed_batch_sizes)
    assert sizes == sorted(sizes) and sizes[-1] == params.max_batch_size.value  # TF Serving's rule
