"""The TF-Serving-compatible model server (``python -m pipeline.model_server``) as a child process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline.local_stack.child_process import ChildProcess
from pipeline.local_stack.ports import LOOPBACK, port_open


class ModelServerProcess(ChildProcess):
    """Serves ``model_base_path`` on ``127.0.0.1:port``; ready once GetModelMetadata answers."""

    name = "model-server"

    def __init__(
        self,
        data_dir: Path,
        model_base_path: Path,
        port: int | None = None,
        *,
        host: str = LOOPBACK,
        probe_model: str = "centernet",
        # Importing TensorFlow and loading a SavedModel takes a while on a 2-core machine.
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 10.0,
        detached: bool = False,
    ) -> None:
        super().__init__(
            data_dir,
            port,
            host=host,
            start_timeout_s=start_timeout_s,
            stop_timeout_s=stop_timeout_s,
            detached=detached,
        )
        self.model_base_path = Path(model_base_path).resolve()
        self.probe_model = probe_model

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pipeline.model_server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--model-base-path",
            str(self.model_base_path),
        ]

    def env(self) -> dict[str, str]:
        # TensorFlow's C++ start-up chatter (CUDA stubs, CPU features) buries our own log lines.
        return {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ}

    def probe(self) -> bool:
        return port_open(self.host, self.port) and metadata_answers(self.address, self.probe_model)


def metadata_answers(address: str, model: str, timeout_s: float = 2.0) -> bool:
    """Whether GetModelMetadata gets an answer; NOT_FOUND counts (the server is up, the model absent)."""
    # Imported here: tensorflow_serving's protos import TensorFlow (~10 s), which a test session
    # that never starts the model server should not pay.
    import grpc
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            stub.GetModelMetadata(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            return bool(exc.code() == grpc.StatusCode.NOT_FOUND)
        return True
