"""The per-frame step: stage order, which stages are timed, and the end-of-stream close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.edge_stage.events import EventBuilder
from pipeline.edge_stage.frame_step import EmitStage, FrameState, FrameStep, TrackStage, build_tracker
from pipeline.edge_stage.outbox import Outbox
from pipeline.metrics import Registry
from pipeline.operators.tracking import Detection
from pipeline.settings import CameraSettings, EdgeSettings

pytestmark = pytest.mark.unit

CAMERA = CameraSettings(id="c1", source="unused.mp4")


class Recorder:
    """A stage that records the order it ran in; frames at odd milliseconds have no motion."""

    timer: str | None

    def __init__(self, name: str, log: list[str], timer: str | None) -> None:
        self.name, self.log, self.timer = name, log, timer
        self.closed_at: int | None = None

    def process(self, frame: FrameState) -> bool:
        self.log.append(self.name)
        frame.motion = frame.ts_ms % 2 == 0
        return frame.motion  # skipped frames are not timed

    def close(self, last: FrameState) -> None:
        self.closed_at = last.ts_ms


def test_stages_run_in_order_and_only_work_done_is_timed() -> None:
    m = Registry()
    log: list[str] = []
    a, b = Recorder("a", log, "a_seconds"), Recorder("b", log, None)
    step = FrameStep([a, b], m, "c1")
    image = np.zeros((4, 4, 3), np.uint8)
    for ts in (1000, 1001, 1002):
        step(image, ts, CAMERA)
    assert log == ["a", "b"] * 3
    assert m.counter("frames_sampled_total", cam="c1") == 3
    assert 'a_seconds_count{cam="c1"} 2' in m.render(), "the frame a skipped is not timed"
    assert step.timers == {"a": "a_seconds"}, "b has no timer"
    step.close(CAMERA)
    assert a.closed_at == b.closed_at == 1002, "close sees the last frame's time"


def test_tracks_alive_at_the_end_are_ended_and_their_ids_persist(tmp_path: Path) -> None:
    edge = EdgeSettings()
    m, kicks = Registry(), []
    with Outbox(tmp_path / "ob.sqlite") as outbox:
        track = TrackStage(edge, outbox, "c1")
        emit = EmitStage(edge, EventBuilder("s1", "c1", "det@1"), outbox, "t/events", m, lambda: kicks.append(1))
        step = FrameStep([track, emit], m, "c1")
        person = Detection((0.1, 0.1, 0.3, 0.5), 0.9, "person")
        image = np.zeros((32, 32, 3), np.uint8)
        for i in range(3):  # the detect stage's output, given directly
            f = FrameState(image, 2000 + 100 * i, CAMERA, detections=[person])
            for s in step.stages:
                s.process(f)
            step.last_ts_ms = f.ts_ms
        assert m.counter("events_total", type="track_started") == 1
        step.close(CAMERA)
        assert m.counter("events_total", type="track_ended") == 1, "the live track ended at close"
        assert emit.events_per_track == {1: 2} and kicks
        assert outbox.get_state("next_track_id:c1") == 2
    with Outbox(tmp_path / "ob.sqlite") as outbox:
        assert TrackStage(edge, outbox, "c1").tracker.next_id == 2, "ids continue after a restart"
    assert build_tracker(edge, first_id=7).next_id == 7


def test_a_crashed_node_takes_its_tracks_back_under_the_same_ids(tmp_path: Path) -> None:
    edge = EdgeSettings()
    image = np.zeros((32, 32, 3), np.uint8)
    person = Detection((0.1, 0.1, 0.3, 0.5), 0.9, "person")
    with Outbox(tmp_path / "ob.sqlite") as outbox:
        track = TrackStage(edge, outbox, "c1")
        for i in range(3):
            track.process(FrameState(image, 2000 + 200 * i, CAMERA, detections=[person], motion=True))
        (before,) = track.tracker.tracks
        # no close(): the process was killed
    with Outbox(tmp_path / "ob.sqlite") as outbox:
        again = TrackStage(edge, outbox, "c1")
        f = FrameState(image, 3000, CAMERA, detections=[person], motion=True)
        again.process(f)
        assert f.update is not None and [t.id for t in f.update.updated] == [before.id] and not f.update.started
        again.close(FrameState(image, 3200, CAMERA))
        assert outbox.get_text("tracker:c1") is None, "a clean end clears the snapshot"
