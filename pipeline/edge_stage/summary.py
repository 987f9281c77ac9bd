"""What a node reports about a run: a progress line while it runs and a summary when it ends.

Both are read from the node's metrics :class:`~pipeline.metrics.Registry` (sums over cameras by
label), the publisher's delivery counters and the camera workers; nothing here counts by itself.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.metrics import Registry

if TYPE_CHECKING:
    from pipeline.edge_stage.camera_worker import CameraWorker
    from pipeline.edge_stage.publisher import Publisher

EVENT_TYPES = ("track_started", "track_updated", "track_ended")


@dataclass(frozen=True, slots=True)
class EdgeProgress:
    elapsed_s: float
    frames_read: int
    frames_detected: int
    events: int  # stored in the outbox
    events_published: int  # PUBACKed by the broker
    outbox_depth: int  # stored, not yet acknowledged by the bridge
    connected: bool
    cameras_running: int

    def line(self) -> str:
        return (
            f"[edge {self.elapsed_s:6.1f}s] frames={self.frames_read} detected={self.frames_detected}"
            f" events={self.events} published={self.events_published} outbox={self.outbox_depth}"
            f" mqtt={'up' if self.connected else 'down'} cameras={self.cameras_running}"
        )


@dataclass(frozen=True, slots=True)
class EdgeSummary:
    elapsed_s: float
    frames_read: int  # decoded from the sources
    frames_sampled: int  # taken at detect_fps
    frames_gated: int  # sampled frames without motion: detector skipped
    frames_detected: int  # detector runs
    frames_corrupt: int
    frames_dropped: int  # live sources: overwritten before they were taken
    detections: int  # detector outputs kept (score and label filters)
    events: int  # stored in the outbox
    events_published: int  # PUBACKed
    bytes_published: int
    video_bytes_read: int  # file size share of the frames read (what the edge keeps off the network)
    outbox_depth: int  # left unacknowledged at exit
    tracks: int
    events_per_track: float
    events_by_type: dict[str, int] = field(default_factory=dict)
    median_event_bytes: float | None = None  # events without a crop
    stage_ms: dict[str, float] = field(default_factory=dict)  # p50 per stage
    camera_states: dict[str, str] = field(default_factory=dict)

    @property
    def gated_share(self) -> float:
        return self.frames_gated / self.frames_sampled if self.frames_sampled else 0.0


def _count(m: Registry, name: str) -> int:
    return int(m.counter(name))


def read_progress(
    m: Registry, publisher: Publisher, workers: Iterable[CameraWorker], elapsed_s: float, outbox_depth: int
) -> EdgeProgress:
    return EdgeProgress(
        elapsed_s=elapsed_s,
        frames_read=_count(m, "frames_read_total"),
        frames_detected=_count(m, "frames_detected_total"),
        events=_count(m, "events_total"),
        events_published=publisher.events_published,
        outbox_depth=outbox_depth,
        connected=publisher.connected,
        cameras_running=sum(w.thread.is_alive() for w in workers),
    )


def stage_p50_ms(m: Registry, workers: Iterable[CameraWorker]) -> dict[str, float]:
    """Median time per stage over every camera, in stage order, for stages that ran."""
    timers: dict[str, str] = {}
    for w in workers:
        if w.step is not None:
            timers.update(w.step.timers)
    out: dict[str, float] = {}
    for name, metric in timers.items():
        v = m.quantile(metric, 0.5)
        if v is not None:
            out[name] = round(v * 1000, 2)
    return out


def summarize(
    m: Registry, publisher: Publisher, workers: list[CameraWorker], elapsed_s: float, outbox_depth: int
) -> EdgeSummary:
    per_track: Counter[tuple[str, int]] = Counter()
    for w in workers:
        for tid, n in w.events_per_track.items():
            per_track[(w.cam, tid)] += n
    return EdgeSummary(
        elapsed_s=round(elapsed_s, 2),
        frames_read=_count(m, "frames_read_total"),
        frames_sampled=_count(m, "frames_sampled_total"),
        frames_gated=_count(m, "frames_gated_total"),
        frames_detected=_count(m, "frames_detected_total"),
        frames_corrupt=_count(m, "frames_corrupt_total"),
        frames_dropped=_count(m, "frames_dropped_total"),
        detections=_count(m, "detections_total"),
        events=_count(m, "events_total"),
        events_published=publisher.events_published,
        bytes_published=publisher.bytes_published,
        video_bytes_read=sum(w.capture.bytes_read for w in workers if w.capture is not None),
        outbox_depth=outbox_depth,
        tracks=len(per_track),
        events_per_track=round(statistics.fmean(per_track.values()), 2) if per_track else 0.0,
        events_by_type={t: int(m.counter("events_total", type=t)) for t in EVENT_TYPES},
        median_event_bytes=m.quantile("event_bytes", 0.5),
        stage_ms=stage_p50_ms(m, workers),
        camera_states={w.cam: w.state for w in workers},
    )
