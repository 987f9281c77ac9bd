"""A camera node's lifecycle: :func:`run_edge`, the entry point of ``pipeline edge``, the demo
and the tests.

Wires a node's cameras (:class:`~pipeline.edge_stage.camera_worker.CameraWorker`: capture ->
the per-frame step of :mod:`pipeline.edge_stage.frame_step` -> outbox) to one publisher (MQTT),
then: start -> run until every camera ended -> wait for the outbox to be acknowledged -> flush
and stop -> summary (:mod:`pipeline.edge_stage.summary`).

One thread per camera (each with its own detector instance: TFLite interpreters are not
thread-safe), one publisher thread, paho's network thread. ``run_edge`` returns when every camera
has ended (file sources without ``loop``) and the outbox is acknowledged (or
``edge.final_ack_wait_s`` passed), or as soon as ``stop`` is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.edge_stage.annotate import Annotator
from pipeline.edge_stage.camera_worker import CameraWorker
from pipeline.edge_stage.capture import Opener, open_cv
from pipeline.edge_stage.model_download import ModelStore
from pipeline.edge_stage.outbox import Outbox
from pipeline.edge_stage.publisher import Publisher
from pipeline.edge_stage.summary import EdgeProgress, EdgeSummary, read_progress, summarize
from pipeline.metrics import Registry, serve_http
from pipeline.settings import Settings

__all__ = ["EdgeProgress", "EdgeSummary", "run_edge"]

PUBLISH_FLUSH_S = 2.0  # at stop: how long the publisher may take to send what is still queued


def run_edge(
    settings: Settings,
    stop: threading.Event,
    progress: Callable[[EdgeProgress], None] | None = None,
    *,
    annotate: Path | None = None,
    snapshot: Path | None = None,
    opener: Opener = open_cv,
    metrics: Registry | None = None,
) -> EdgeSummary:
    """Run every camera of ``settings.edge`` until they end (and the outbox is acked) or ``stop``."""
    edge = settings.edge
    m = metrics or Registry("edge")
    started = time.monotonic()
    outbox = Outbox(edge.outbox_path, max_events=edge.outbox_max_events, max_age_s=edge.outbox_max_age_s, metrics=m)
    workers: dict[str, CameraWorker] = {}

    def on_config(cam: str, raw: bytes) -> None:
        w = workers.get(cam)
        if w is not None:
            w.on_config(raw)

    publisher = Publisher(settings, outbox, m, on_config=on_config)
    store = ModelStore(edge, stop, mqtt=settings.mqtt)
    http = serve_http(m, edge.metrics_port) if edge.metrics_port else None
    for i, camera in enumerate(edge.cameras):
        ann = Annotator(annotate, camera.detect_fps, snapshot) if (annotate or snapshot) and i == 0 else None
        workers[camera.id] = CameraWorker(
            settings, camera, outbox, publisher, m, stop, opener=opener, annotator=ann, store=store
        )

    def report() -> None:
        if progress is not None:
            progress(read_progress(m, publisher, workers.values(), time.monotonic() - started, outbox.depth()))

    try:
        publisher.start()
        for w in workers.values():
            w.thread.start()
        _run_cameras(workers.values(), stop, report)
        _await_acks(outbox, stop, edge.final_ack_wait_s, report)
        for w in workers.values():
            w.thread.join(timeout=10)
        report()
    finally:
        _flush(publisher)
        for w in workers.values():
            if not w.thread.is_alive() and w.state != "failed":
                w.publish_status("offline", "edge stopped" if stop.is_set() else w.reason)
        publisher.stop()
        if http is not None:
            http.shutdown()
            http.server_close()
        depth = outbox.depth()
        outbox.close()
    return summarize(m, publisher, list(workers.values()), time.monotonic() - started, depth)


def _run_cameras(workers: Iterable[CameraWorker], stop: threading.Event, report: Callable[[], None]) -> None:
    """Until every camera thread ended (or stop), reporting progress once a second."""
    threads = [w.thread for w in workers]
    while not stop.is_set() and any(t.is_alive() for t in threads):
        stop.wait(1.0)
        report()


def _await_acks(outbox: Outbox, stop: threading.Event, wait_s: float, report: Callable[[], None]) -> None:
    """Until the bridge acknowledged every stored event, ``wait_s`` passed, or stop."""
    deadline = time.monotonic() + wait_s
    next_report = time.monotonic() + 1.0
    while not stop.is_set() and outbox.depth() > 0 and time.monotonic() < deadline:
        stop.wait(0.1)
        if time.monotonic() >= next_report:
            report()
            next_report += 1.0


def _flush(publisher: Publisher) -> None:
    """Give the publisher up to PUBLISH_FLUSH_S to send what it has queued (statuses included)."""
    deadline = time.monotonic() + PUBLISH_FLUSH_S
    while publisher.connected and not publisher.drained() and time.monotonic() < deadline:
        time.sleep(0.05)
