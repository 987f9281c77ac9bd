"""``pipeline alerts``: subscribe to alerts over MQTT and print each one as it arrives."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
from dataclasses import asdict

from pipeline.alerts_subscriber import AlertSubscriber, ReceivedAlert, format_alert
from pipeline.settings import Settings
from pipeline.topics import Kind, Topics


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "alerts",
        help="Subscribe to alerts over MQTT and print each as it arrives.",
        description="Prints every alert published on <prefix>/alerts (or one camera's alerts topic), "
        "deduplicated by alert id, with its capture->alert latency. Ctrl-C to stop.",
    )
    p.add_argument("--camera", help="Only this camera (needs --site).")
    p.add_argument("--site", help="Site of --camera.")
    p.add_argument("--json", action="store_true", help="Print alerts as JSON lines.")
    p.add_argument("--count", type=int, default=0, help="Exit after this many unique alerts (0 = never).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    topic = None
    if args.camera:
        if not args.site:
            print("error: --camera needs --site")
            return 2
        topic = Topics(settings.mqtt.topic_prefix).camera(args.site, args.camera, Kind.ALERTS)
    done = threading.Event()
    seen = 0

    def on_alert(r: ReceivedAlert) -> None:
        nonlocal seen
        print(json.dumps(asdict(r.alert)) if args.json else format_alert(r), flush=True)
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with (
        AlertSubscriber(settings, f"alerts-cli-{os.getpid()}", on_alert, topic=topic),
        contextlib.suppress(KeyboardInterrupt),
    ):
        done.wait()
    return 0
