"""The tracker a camera runs and the detections it is fed: one seam for the edge and the benchmark.

The edge's per-frame step and ``benchmarks/accuracy`` both build the tracker and prepare the
detector's output here, so the accuracy table always measures what is deployed.
"""

from __future__ import annotations

from pipeline.edge_stage.appearance import with_features
from pipeline.edge_stage.capture import Image
from pipeline.operators.tracking import Detection, Tracker
from pipeline.settings import CameraSettings, EdgeSettings


def make_tracker(edge: EdgeSettings, camera: CameraSettings | None = None, first_id: int = 1) -> Tracker:
    """The camera's tracker (``camera`` gives the high-score threshold of the low-score stage)."""
    low_stage = edge.track_low_score is not None and camera is not None
    return Tracker(
        max_missed=edge.track_max_missed,
        lost_ms=round(edge.track_lost_s * 1000),
        high_score=camera.min_score if low_stage and camera is not None else None,
        first_id=first_id,
    )


def select_detections(detections: list[Detection], camera: CameraSettings, edge: EdgeSettings) -> list[Detection]:
    """The camera's labels at or above its ``min_score`` (or ``edge.track_low_score`` when that is on)."""
    labels = set(camera.labels)
    floor = camera.min_score if edge.track_low_score is None else min(edge.track_low_score, camera.min_score)
    return [d for d in detections if d.score >= floor and d.label in labels]


def prepare_detections(
    frame: Image, detections: list[Detection], camera: CameraSettings, edge: EdgeSettings
) -> list[Detection]:
    """What the tracker is fed: selected detections, with appearance features when enabled."""
    kept = select_detections(detections, camera, edge)
    return with_features(frame, kept) if edge.track_appearance else kept
