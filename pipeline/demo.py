"""The whole pipeline on one machine: local brokers, model server, bridge, cloud worker, edge.

The bridge and the cloud worker run as the same commands a deployment runs (``pipeline bridge``,
``pipeline cloud``), as child processes; the edge runs in this process so its progress and
summary can be shown; an MQTT alert subscriber prints each alert as it arrives.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.alerts_subscriber import AlertStats, AlertSubscriber, ReceivedAlert, format_alert
from pipeline.edge_stage.runner import EdgeSummary, run_edge
from pipeline.local_stack.pipeline_service import PipelineService
from pipeline.local_stack.stack import LocalStack
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# What each command logs once it serves (see their modules).
BRIDGE_READY = r"bridge \S+ ready"
CLOUD_READY = r"cloud stage ready"
HISTORY_READY = r"history store ready"
CONSOLE_READY = r"console ready at"


@dataclass
class DemoResult:
    edge: EdgeSummary
    alerts: AlertStats
    wall_s: float

    def lines(self) -> list[str]:
        e, a = self.edge, self.alerts
        ratio = e.video_bytes_read / e.bytes_published if e.bytes_published else float("inf")
        p50, p95 = _ms(a.latency_quantile(0.5)), _ms(a.latency_quantile(0.95))
        return [
            "",
            "=== demo summary ===",
            f"frames read            {e.frames_read}",
            f"frames gated (no motion){e.frames_gated:>6}",
            f"frames detected        {e.frames_detected}",
            f"detections             {e.detections}",
            f"events published       {e.events_published}  ({e.tracks} tracks)",
            f"bytes sent             {e.bytes_published:,}  vs video bytes read {e.video_bytes_read:,}"
            f"  ({ratio:,.0f}x less)",
            f"alerts received        {len(a.unique)}  (duplicates dropped: {a.duplicates})",
            f"capture->alert latency p50 {p50}  p95 {p95}",
            f"wall time              {self.wall_s:.1f} s",
        ]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def demo_settings(base: Settings, run_dir: Path, clip: Path | None, loops: bool) -> Settings:
    """The stack's settings with the sample clip paced like a live camera and a fresh outbox."""
    cams = [
        c.model_copy(update={"realtime": True, "loop": loops, **({"source": str(clip)} if clip else {})})
        for c in base.edge.cameras
    ]
    edge = base.edge.model_copy(update={"cameras": cams, "outbox_path": run_dir / "edge-outbox.sqlite"})
    cloud = base.cloud.model_copy(update={"data_dir": run_dir / "faust"})
    history = base.history.model_copy(update={"database_url": f"sqlite:///{run_dir / 'history.sqlite3'}"})
    return base.model_copy(update={"edge": edge, "cloud": cloud, "history": history})


def console_for_demo(settings: Settings) -> tuple[Settings, str | None]:
    """The console's settings: a one-run admin password when no users are configured, and a
    free port when the configured one is taken. Returns (settings, that password or None)."""
    from pipeline.console.auth import hash_password
    from pipeline.local_stack.ports import free_port, port_open

    c = settings.console
    update: dict[str, Any] = {}
    password = None
    if not c.users and c.users_file is None:
        password = secrets.token_urlsafe(12)
        update["users"] = f"admin:admin:{hash_password(password)}"
    if c.port == 0 or port_open(c.host, c.port):
        update["port"] = free_port(c.host)
    return settings.model_copy(update={"console": c.model_copy(update=update)}), password


def run_demo(
    settings: Settings,
    *,
    clip: Path | None = None,
    annotate: Path | None = None,
    quiet_s: float = 6.0,
    print_fn: Callable[[str], Any] = print,
    stop: threading.Event | None = None,
    console: bool = True,
    stay: bool = False,
) -> DemoResult:
    stop = stop or threading.Event()
    run_dir = (settings.local.run_dir / "demo").resolve()
    shutil.rmtree(run_dir, ignore_errors=True)  # a demo starts from nothing: empty brokers, no outbox
    run_dir.mkdir(parents=True)
    began = time.monotonic()
    print_fn(f">> starting Mosquitto, Tansu (Kafka protocol) and the TF-Serving-compatible model server in {run_dir}")
    with LocalStack(settings, run_dir) as stack:
        s = demo_settings(stack.settings, run_dir, clip, loops=False)
        password = None
        if console:
            s, password = console_for_demo(s)
        config_file = run_dir / "demo-settings.yaml"
        config_file.write_text(s.to_yaml())
        print_fn(
            f">> MQTT {s.mqtt.host}:{s.mqtt.port}  Kafka {s.kafka.bootstrap_servers}  model {s.model_server.address}"
        )
        bridge = PipelineService("bridge", run_dir, config_file, ["bridge"], BRIDGE_READY)
        cloud = PipelineService("cloud", run_dir, config_file, ["cloud"], CLOUD_READY)

        def on_alert(r: ReceivedAlert) -> None:
            print_fn(format_alert(r))

        with ExitStack() as parts:
            if console:  # the alert history (SQLite) and the operator console
                parts.enter_context(PipelineService("history", run_dir, config_file, ["history"], HISTORY_READY))
                parts.enter_context(PipelineService("console", run_dir, config_file, ["console"], CONSOLE_READY))
                who = f"user admin, password {password} (this run only)" if password else "users from console.*"
                print_fn(f">> console: http://{s.console.host}:{s.console.port}/  {who}")
            parts.enter_context(bridge)
            parts.enter_context(cloud)
            subscriber = parts.enter_context(AlertSubscriber(s, "demo-alerts", on_alert))
            print_fn(f">> bridge and cloud worker ready (logs: {bridge.log_path}, {cloud.log_path})")
            print_fn(f">> edge: {', '.join(f'{c.id} <- {c.source}' for c in s.edge.cameras)}")
            last = [0.0]

            def progress(p: Any) -> None:
                if time.monotonic() - last[0] >= 1.0:
                    last[0] = time.monotonic()
                    print_fn(f"   {p.line()} alerts={len(subscriber.stats.unique)}")

            summary = run_edge(s, stop, progress=progress, annotate=annotate)
            print_fn(">> edge finished; waiting for the last alerts")
            subscriber.wait_quiet(quiet_s=quiet_s, timeout_s=120.0)
            result = DemoResult(summary, subscriber.stats, time.monotonic() - began)
            if console and stay and not stop.is_set():
                for line in result.lines():
                    print_fn(line)
                print_fn(f">> the console stays up at http://{s.console.host}:{s.console.port}/ until Ctrl-C")
                while not stop.wait(1.0):
                    pass
    return result
