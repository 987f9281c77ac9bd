"""``pipeline edge``: run this node's cameras and publish their events (last step of the edge).

Prints a progress line about once a second (frames, events, outbox depth) and a summary at the
end; stops cleanly on SIGINT/SIGTERM (tracks are ended, the outbox keeps what is unacknowledged).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.cli_support import add_override
from pipeline.errors import ConfigError
from pipeline.settings import CameraSettings, Settings


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "edge",
        help="Run a camera node: capture, motion gate, detector, tracker, outbox, MQTT.",
        description=__doc__,
    )
    p.add_argument(
        "--source",
        action="append",
        default=None,
        metavar="SRC",
        help="Camera source (file, V4L2 index or URL); repeat for more cameras. Replaces"
        " edge.cameras with cam-1, cam-2, ... using the first camera's other settings.",
    )
    p.add_argument("--loop", action="store_true", help="Loop file sources (with --source).")
    p.add_argument("--annotate", type=Path, metavar="OUT.mp4", help="Write the first camera's annotated video.")
    p.add_argument("--snapshot", type=Path, metavar="PNG", help="Save the last annotated frame.")
    p.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    add_override(
        p, "--detector", path="edge.detector", choices=["centernet", "centernet-int8", "hog"], help="Light detector."
    )
    add_override(
        p,
        "--runtime",
        path="edge.detector_runtime",
        choices=["litert", "openvino"],
        help="Engine of the float CenterNet (openvino: add --precision bf16 for ~2x on CPUs with bf16).",
    )
    add_override(p, "--precision", path="edge.detector_precision", choices=["f32", "bf16"], help="OpenVINO arithmetic.")
    add_override(p, "--site", metavar="SITE", path="edge.site", help="Site id.")
    add_override(p, "--node-id", metavar="NODE", path="edge.node_id", help="Node id (MQTT client id).")
    add_override(p, "--outbox", metavar="FILE", path="edge.outbox_path", type=Path, help="Outbox file.")
    add_override(
        p, "--metrics-port", metavar="PORT", path="edge.metrics_port", type=int, help="Prometheus metrics port."
    )
    add_override(p, "--threads", metavar="N", path="edge.detector_threads", type=int, help="TFLite threads per camera.")
    p.set_defaults(func=run_command)


def _with_sources(settings: Settings, sources: list[str], loop: bool) -> Settings:
    base = (
        settings.edge.cameras[0]
        if settings.edge.cameras
        else CameraSettings.model_validate({"id": "cam-1", "source": sources[0]})
    )
    cams = [
        CameraSettings.model_validate(
            {**base.model_dump(), "id": f"cam-{i + 1}", "source": src, "loop": loop or base.loop}
        )
        for i, src in enumerate(sources)
    ]
    return settings.model_copy(update={"edge": settings.edge.model_copy(update={"cameras": cams})})


def check_sources(sources: list[str]) -> None:
    """A file named on the command line must exist now: a typo fails at once with its name.

    Only ``--source`` files: devices and URLs may come up later, and cameras of a settings file
    keep retrying with backoff (a file that is being replaced reports ``reconnecting``)."""
    from pipeline.edge_stage.capture import is_file_source

    missing = [src for src in sources if is_file_source(src) and not Path(src).is_file()]
    if missing:
        raise ConfigError(f"--source: no such file: {', '.join(missing)}")


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.edge_stage.runner import EdgeProgress, run_edge

    if args.source:
        check_sources(args.source)
        settings = _with_sources(settings, args.source, args.loop)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def progress(p: EdgeProgress) -> None:
        print(p.line(), flush=True)

    summary = run_edge(settings, stop, progress, annotate=args.annotate, snapshot=args.snapshot)
    if args.json:
        print(json.dumps(asdict(summary) | {"gated_share": summary.gated_share}, indent=2))
    else:
        print(
            f"edge done in {summary.elapsed_s:.1f}s: frames read={summary.frames_read}"
            f" sampled={summary.frames_sampled} gated={summary.frames_gated} ({summary.gated_share:.0%})"
            f" detected={summary.frames_detected} detections={summary.detections} events={summary.events}"
            f" published={summary.events_published} ({summary.bytes_published} B, video read"
            f" {summary.video_bytes_read} B) tracks={summary.tracks}"
            f" events/track={summary.events_per_track} outbox left={summary.outbox_depth}"
            f" stage p50 ms={summary.stage_ms}",
            flush=True,
        )
    return 0
