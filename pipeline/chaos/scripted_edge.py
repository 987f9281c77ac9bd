"""The edge's real delivery path (outbox + MQTT publisher) fed by a :class:`ScriptedStream`
instead of cameras, in this process or as a child process that a scenario can SIGKILL.

Progress is kept in the outbox itself (state key ``chaos_next``, written after each append), so
a restarted edge on the same outbox file goes on where the last one stopped; a crash between an
append and that write re-emits one event with the same id (a duplicate, never a loss).

A child can be paced from outside (``--gate FILE``: emit only while the index is below the number
in the file) and reports what only it can see (``--status FILE``: connection changes, paho's queue,
in-flight and outbox peaks) as JSON, for a scenario whose edge runs in another network namespace.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.chaos.stream import ScriptedStream
from pipeline.compat.paho_uplink import queued_publishes
from pipeline.edge_stage.outbox import Outbox
from pipeline.edge_stage.publisher import Publisher
from pipeline.metrics import Registry
from pipeline.settings import CameraSettings, Settings, load_settings
from pipeline.topics import Kind, Topics

log = logging.getLogger(__name__)

NEXT_KEY = "chaos_next"
EDGE_READY = "scripted edge ready"


def edge_settings_for(settings: Settings, stream: ScriptedStream, outbox: Path) -> Settings:
    """``settings`` with the edge section naming the stream's site and cameras (so the publisher
    subscribes to their acks) and the outbox file."""
    cams = [CameraSettings(id=c, source="scripted") for c in stream.cams]
    edge = settings.edge.model_copy(update={"site": stream.site, "cameras": cams, "outbox_path": outbox})
    return settings.model_copy(update={"edge": edge})


class ScriptedEdge:
    """Appends the stream's events to the outbox at ``rate_per_s``; the publisher sends them."""

    def __init__(self, settings: Settings, stream: ScriptedStream, *, rate_per_s: float = 50.0,
                 limit: Callable[[], int] | None = None,
                 on_emit: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.stream = stream
        self.rate_per_s = rate_per_s
        self.limit = limit  # emit event i only once i < limit()
        self.on_emit = on_emit  # called with i once event i is in the outbox
        self.topics = Topics(settings.mqtt.topic_prefix)
        self.metrics = Registry("edge")
        e = settings.edge
        self.outbox = Outbox(e.outbox_path, max_events=e.outbox_max_events, max_age_s=e.outbox_max_age_s,
                             metrics=self.metrics)  # fmt: skip
        self.publisher = Publisher(settings, self.outbox, self.metrics)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scripted-edge", daemon=True)

    def start(self) -> ScriptedEdge:
        self.publisher.start()
        self._thread.start()
        return self

    def _run(self) -> None:
        i = self.outbox.get_state(NEXT_KEY, 0)
        while i < self.stream.n and not self._stop.is_set():
            if self.limit is not None and i >= self.limit():
                self._stop.wait(0.02)
                continue
            ev = self.stream.event(i)
            self.outbox.append(ev, self.topics.camera(ev.site, ev.cam, Kind.EVENTS))
            i += 1
            self.outbox.set_state(NEXT_KEY, i)
            if self.on_emit is not None:
                self.on_emit(i - 1)
            self.publisher.kick()
            self._stop.wait(1.0 / self.rate_per_s)

    def emitted(self) -> int:
        return self.outbox.get_state(NEXT_KEY, 0)

    def done_emitting(self) -> bool:
        return not self._thread.is_alive() and self.emitted() >= self.stream.n

    def drained(self) -> bool:
        """Every event emitted and acknowledged by the bridge (deleted from the outbox)."""
        return self.done_emitting() and self.outbox.depth() == 0

    def wait(self, what: str, timeout_s: float) -> bool:
        """Wait for ``emitted >= k`` (what=\"emitted:k\") or ``drained``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if what == "drained" and self.drained():
                return True
            if what.startswith("emitted:") and self.emitted() >= int(what.split(":")[1]):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.publisher.stop()
        self.outbox.close()


def outbox_progress(path: Path) -> tuple[int, int]:
    """``(events emitted, events still in the outbox)`` read from another process's outbox file."""
    if not path.exists():
        return 0, 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT value FROM state WHERE key = ?", (NEXT_KEY,)).fetchone()
        depth = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return (int(row[0]) if row else 0), int(depth)
    except sqlite3.OperationalError:  # tables not created yet
        return 0, 0
    finally:
        db.close()


def read_gate(path: Path) -> int:
    """The number in a gate file (0 while it is missing or being replaced)."""
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def write_gate(path: Path, limit: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(limit))
    os.replace(tmp, path)


class StatusWriter:
    """Samples the edge every 20 ms and rewrites ``path`` (JSON) every 0.1 s.

    Times are ``time.monotonic()``: CLOCK_MONOTONIC is one clock for the whole machine (network
    namespaces do not change it), so the scenario compares them with its own readings.
    """

    def __init__(self, edge: ScriptedEdge, path: Path) -> None:
        self.edge, self.path = edge, path
        self.state: dict[str, Any] = {"connected": False, "connects": [], "disconnects": [], "peak_paho_queue": 0,
                                      "peak_inflight": 0, "peak_outbox": 0, "rss_kb": 0, "peak_rss_kb": 0}  # fmt: skip
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-status", daemon=True)

    def start(self) -> StatusWriter:
        self._thread.start()
        return self

    def _sample(self) -> None:
        e, st = self.edge, self.state
        connected = e.publisher.connected
        if connected != st["connected"]:
            st["connects" if connected else "disconnects"].append(time.monotonic())
            st["connected"] = connected
        st["peak_paho_queue"] = max(st["peak_paho_queue"], queued_publishes(e.publisher.client) or 0)
        st["peak_inflight"] = max(st["peak_inflight"], e.publisher.inflight())
        st["peak_outbox"] = max(st["peak_outbox"], e.outbox.depth())
        st["rss_kb"] = rss_kb()
        st["peak_rss_kb"] = max(st["peak_rss_kb"], st["rss_kb"])

    def _write(self) -> None:
        m = self.edge.metrics
        self.state.update(
            emitted=self.edge.emitted(), outbox=self.edge.outbox.depth(),
            outbox_max_events=self.edge.outbox.max_events, dropped=m.counter("outbox_dropped_total"),
            replayed=m.counter("outbox_replayed_total"), max_inflight=self.edge.publisher.max_inflight,
        )  # fmt: skip
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(0.02):
            self._sample()
            ticks += 1
            if ticks % 5 == 0:
                self._write()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._write()


def rss_kb() -> int:
    """This process's resident set size (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_status(path: Path) -> dict[str, Any]:
    """What the child's :class:`StatusWriter` wrote last (empty before its first write)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def child_args(stream: ScriptedStream, rate_per_s: float) -> list[str]:
    """Arguments of ``python -m pipeline.chaos.scripted_edge`` for this stream."""
    return [
        "--n", str(stream.n), "--site", stream.site, "--cams", ",".join(stream.cams), "--tag", stream.tag,
        "--base-ts", str(stream.base_ts), "--rate", str(rate_per_s),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Child-process entry: emit the stream, wait for the acks, exit 0 (or 1 if not drained)."""
    p = argparse.ArgumentParser(prog="python -m pipeline.chaos.scripted_edge")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--cams", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--base-ts", type=int, required=True)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--gate", type=Path, help="Emit event i only once i < the number in this file.")
    p.add_argument("--status", type=Path, help="Write the edge's status here (JSON, every 0.1 s).")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    stream = ScriptedStream(a.n, a.site, tuple(a.cams.split(",")), a.tag, a.base_ts)
    settings = load_settings(a.config)
    gate: Path | None = a.gate
    limit = None if gate is None else (lambda: read_gate(gate))
    edge = ScriptedEdge(settings, stream, rate_per_s=a.rate, limit=limit)
    edge.start()
    status = StatusWriter(edge, a.status).start() if a.status else None
    try:
        edge.publisher.wait_connected(60)
        log.info("%s (outbox %s, resuming at %d)", EDGE_READY, settings.edge.outbox_path, edge.emitted())
        ok = edge.wait("drained", a.drain_timeout)
        log.info("scripted edge done: emitted=%d outbox=%d", edge.emitted(), edge.outbox.depth())
    finally:
        if status is not None:
            status.close()
        edge.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
