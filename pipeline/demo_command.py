"""``pipeline demo``: the whole pipeline on one machine, on embedded defaults."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="Run everything on one machine on the sample clip (starts and stops local brokers).",
        description=(
            "Starts Mosquitto, Tansu (a Kafka-protocol broker) and the TF-Serving-compatible model server on "
            "free loopback ports, then `pipeline bridge` and `pipeline cloud` as child processes, then the edge "
            "stage on the sample clip paced like a live camera; also `pipeline history` (SQLite) and "
            "`pipeline console`, whose URL and a one-run admin password it prints. Prints progress, each alert as "
            "it arrives over MQTT, and a summary. Everything started is stopped at the end (also on Ctrl-C). "
            "Work files and logs go to <local.run_dir>/demo."
        ),
    )
    p.add_argument("--clip", type=Path, help="Video file to use instead of samples/vtest_clip.mp4.")
    p.add_argument("--annotate", type=Path, metavar="OUT.mp4", help="Also write the annotated video here.")
    p.add_argument(
        "--quiet-s", type=float, default=6.0, help="After the clip ends, wait until no alert came for this long."
    )
    p.add_argument(
        "--no-console", action="store_true", help="Do not start the alert history (SQLite) and the operator console."
    )
    p.add_argument(
        "--stay", action="store_true", help="After the clip, keep everything (and the console) running until Ctrl-C."
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.demo import run_demo  # heavy imports only when the demo really runs

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        result = run_demo(
            settings,
            clip=args.clip,
            annotate=args.annotate,
            quiet_s=args.quiet_s,
            stop=stop,
            console=not args.no_console,
            stay=args.stay,
        )
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped")
        return 130
    for line in result.lines():
        print(line)
    return 0
