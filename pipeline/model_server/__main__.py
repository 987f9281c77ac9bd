"""``python -m pipeline.model_server --port P --model-base-path DIR``: the TF-Serving-compatible server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from pipeline.model_server.tfserving_compat import TFServingCompatServer

log = logging.getLogger("pipeline.model_server")


def serve(host: str, port: int, model_base_path: Path) -> int:
    server = TFServingCompatServer(model_base_path, host=host, port=port)
    served = server.preload()
    bound = server.start()
    if not served:
        log.warning("no models under %s yet; they are picked up when they appear", model_base_path)
    for name, versions in served.items():
        log.info("serving model %s versions %s on %s:%d", name, versions, host, bound)
    log.info("TF-Serving-compatible gRPC server listening on %s:%d (base path %s)", host, bound, model_base_path)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    log.info("stopping")
    server.stop()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.model_server",
        description="TF-Serving-compatible gRPC server (Predict, GetModelMetadata, GetModelStatus) over"
        " <model-base-path>/<model>/<version>/saved_model.pb. Not TensorFlow Serving itself.",
    )
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500, as TF Serving).")
    parser.add_argument("--host", default="127.0.0.1", help="Bind address (default 127.0.0.1).")
    parser.add_argument("--model-base-path", type=Path, required=True, help="Directory of <model>/<version>/.")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    return serve(args.host, args.port, args.model_base_path)


if __name__ == "__main__":
    code = main()
    # TensorFlow's interpreter teardown takes seconds after the server has already stopped;
    # nothing is left to flush but the logs, so skip it and let SIGTERM mean a prompt exit.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(code)
