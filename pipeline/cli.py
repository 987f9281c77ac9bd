"""``pipeline``: one command, a subcommand for each long-running part.

Each part registers its own subcommands (``register(subparsers)`` in its ``command`` module)
so this file stays a table of contents.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.cli_support import OVERRIDES_DEST, nest
from pipeline.errors import ConfigError, PipelineError
from pipeline.settings import Settings, load_settings

# (module, the subcommands it adds) in data-path order; each module has register(subparsers).
COMMAND_MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pipeline.demo_command", ("demo",)),  # everything on one machine
    ("pipeline.edge_stage.command", ("edge",)),
    ("pipeline.bridge.command", ("bridge",)),
    ("pipeline.cloud_stage.command", ("cloud", "config")),
    ("pipeline.model_server.command", ("model-server",)),
    ("pipeline.local_stack.command", ("stack",)),  # up/down/status
    ("pipeline.alerts_command", ("alerts",)),  # subscribe and print
    ("pipeline.chaos.command", ("chaos",)),  # fault scenarios and fuzzing, with a table
    ("pipeline.model_registry.command", ("models",)),  # add/list/serve/publish
    ("pipeline.hard_examples.command", ("report",)),  # hard-examples / coco / thresholds
    ("pipeline.history.command", ("history",)),  # alerts into SQL
    ("pipeline.console.command", ("console",)),  # operator web app
)

EPILOG = """\
data path: camera -> edge (motion gate, detector, tracker, outbox) -> MQTT -> bridge -> Kafka
-> cloud (Faust + TF Serving) -> alerts -> bridge -> MQTT <prefix>/alerts.

settings: every subcommand reads one settings model: flags > PIPELINE_* environment variables
(nested with __, e.g. PIPELINE_MQTT__PORT=1884) > --config FILE (YAML) > defaults.
Print the effective settings with `pipeline settings`.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Edge video analytics: events, not video, from cameras to cloud alerts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="YAML settings file (also PIPELINE_CONFIG).")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (default INFO).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    show = sub.add_parser("settings", help="Print the effective settings as YAML and exit (secrets masked).")
    show.add_argument(
        "--show-secrets", action="store_true", help="print passwords and keys in clear (to write a settings file)"
    )
    show.set_defaults(
        func=lambda args, settings: print(settings.to_yaml(reveal_secrets=args.show_secrets), end="") or 0
    )
    for name, commands in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] == "pipeline":
                raise  # our own module is missing: a bug, not an install choice
            # A node installed with only one extra lacks the other parts' libraries: their
            # subcommands stay listed and say what is missing instead of vanishing.
            for command in commands:
                _unavailable(sub, command, exc)
            continue
        module.register(sub)
    return parser


def _unavailable(sub: Any, command: str, exc: ModuleNotFoundError) -> None:
    why = f"needs the Python package {exc.name!r}, which is not installed"
    p = sub.add_parser(command, help=f"(unavailable: {why})", description=f"unavailable: {why}")

    def fail(args: argparse.Namespace, settings: Settings) -> int:
        raise ConfigError(f"`pipeline {command}` {why}; install the extra that carries it (pip install -e '.[...]',"
                          " see pyproject.toml)")  # fmt: skip

    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # whatever follows: same answer
    p.set_defaults(func=fail)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The effective settings of a parsed command line: its flags > PIPELINE_* environment >
    ``--config`` file (or PIPELINE_CONFIG) > defaults. Raises ConfigError on an unknown key."""
    return load_settings(args.config, **nest(getattr(args, OVERRIDES_DEST, None) or {}))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args, settings_from_args(args)) or 0)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
