"""``pipeline bridge``: run the MQTT <-> Kafka bridge until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.cli_support import add_override
from pipeline.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Forward camera events from MQTT to Kafka and alerts/config from Kafka to MQTT.

uplink:   <prefix>/+/+/events (QoS 1, persistent MQTT 5 session, $share/<group>/ when a shared
          group is set) -> validate -> Kafka events topic (key = site/camera, acks=all); the MQTT
          message is acknowledged only after Kafka acknowledged the record. Rejected messages
          go to the dead-letter topic. Acknowledged seqs go back to <prefix>/<site>/<cam>/acks.
downlink: Kafka alerts topic -> <prefix>/<site>/<cam>/alerts and <prefix>/alerts (QoS 1);
          Kafka config topic -> <prefix>/<site>/<cam>/config (retained). Offsets are committed
          after the MQTT PUBACKs.

Several bridges with the same --shared-group split the load; give each its own --client-id.
SIGTERM/SIGINT drain what Kafka already has, then disconnect.
"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bridge",
        help="MQTT <-> Kafka bridge (events up, alerts and config down).",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_override(
        parser, "--client-id", path="bridge.client_id", metavar="ID", help="MQTT client id, unique per bridge."
    )
    add_override(
        parser,
        "--shared-group",
        path="bridge.shared_group",
        metavar="GROUP",
        help="MQTT 5 shared subscription group ('' subscribes directly).",
        type=lambda s: s or None,
    )
    add_override(parser, "--health-port", path="bridge.health_port", metavar="PORT", type=int,
                 help="Serve /healthz and /metrics on 127.0.0.1:PORT.")  # fmt: skip
    add_override(parser, "--max-inflight", path="bridge.max_inflight", metavar="N", type=int,
                 help="MQTT messages taken but not yet acknowledged by Kafka.")  # fmt: skip
    add_override(parser, "--mqtt-host", path="mqtt.host", metavar="HOST", help="MQTT broker host.")
    add_override(parser, "--mqtt-port", path="mqtt.port", metavar="PORT", type=int, help="MQTT broker port.")
    add_override(
        parser,
        "--bootstrap-servers",
        path="kafka.bootstrap_servers",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers.",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        type=Path,
        help="Profile every thread with cProfile and write pstats to FILE when the bridge stops.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bridge.service import run_bridge  # kafka/paho only when this command runs

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("bridge: %s received, draining", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    profiles = None
    if args.profile is not None:
        from pipeline.bridge.profiling import ThreadProfiles

        profiles = ThreadProfiles()
        profiles.start()
    try:
        run_bridge(settings, stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if profiles is not None:
            profiles.dump(args.profile)
    return 0
