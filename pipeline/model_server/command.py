"""``pipeline model-server``: the TF-Serving-compatible gRPC server in the foreground."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.cli_support import add_override
from pipeline.errors import ConfigError
from pipeline.settings import Settings


def _run(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: TensorFlow takes seconds to import and other subcommands do not need it.
    from pipeline.model_server.__main__ import serve

    host, sep, port = settings.model_server.address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"model_server.address must be host:port, got {settings.model_server.address!r}")
    return serve(host or "127.0.0.1", int(port), Path(settings.model_server.model_base_path))


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "model-server",
        help="Serve models/ over TF Serving's gRPC API (Python stand-in, not TF Serving itself).",
        description="TF-Serving-compatible gRPC server: PredictionService.Predict/GetModelMetadata and"
        " ModelService.GetModelStatus over <model_base_path>/<model>/<version>/saved_model.pb, highest"
        " version by default. In docker compose the tensorflow/serving image serves the same directory.",
    )
    add_override(parser, "--address", path="model_server.address", metavar="HOST:PORT", help="host:port to listen on.")
    add_override(
        parser,
        "--model-base-path",
        path="model_server.model_base_path",
        type=Path,
        metavar="DIR",
        help="Model directory.",
    )
    parser.set_defaults(func=_run)
