"""Pure edge pieces: motion gate, capture checks, event building, outbox, config parsing."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pipeline.edge_stage.capture import Backoff, Capture, SourceState, frame_problem
from pipeline.edge_stage.config_sync import Applied, Ignored, LiveCameraConfig, parse_config
from pipeline.edge_stage.detectors.base import letterbox
from pipeline.edge_stage.events import EventBuilder, crop_b64
from pipeline.edge_stage.motion_gate import MotionGate, detection_roi
from pipeline.edge_stage.outbox import Outbox
from pipeline.metrics import Registry
from pipeline.operators.schema import Event, Rejected, decode_event, encode_event
from pipeline.operators.tracking import Track
from pipeline.settings import SAMPLE_CLIP, CameraSettings
from pipeline.testing import FakeClock

pytestmark = pytest.mark.unit


def _frame(x: int | None = None, w: int = 320, h: int = 240) -> npt.NDArray[np.uint8]:
    img = np.full((h, w, 3), 90, np.uint8)
    if x is not None:
        img[80:160, x : x + 30] = 240
    return img


# ----------------------------------------------------------------------------- motion gate


def test_static_scene_is_gated_and_moving_object_gives_region() -> None:
    gate = MotionGate(threshold=0.002, work_width=160)
    for _ in range(5):
        res = gate.check(_frame())
    assert not res.motion
    res = gate.check(_frame(x=150))
    assert res.motion and res.regions
    x1, y1, x2, y2 = res.regions[0]
    assert x1 <= 150 <= x2 and y1 <= 100 <= y2


def test_masked_motion_is_ignored() -> None:
    gate = MotionGate(threshold=0.002, masks=[[(0.3, 0.0), (0.7, 0.0), (0.7, 1.0), (0.3, 1.0)]], work_width=160)
    for _ in range(5):
        gate.check(_frame())
    assert not gate.check(_frame(x=150)).motion  # inside the mask
    gate.reconfigure(0.002, [])
    assert gate.check(_frame(x=160)).motion


def test_detection_roi_small_region_vs_full_frame() -> None:
    assert detection_roi([(100, 100, 140, 180)], (768, 576)) is not None
    assert detection_roi([(0, 0, 700, 500)], (768, 576)) is None
    roi = detection_roi([(100, 100, 140, 180)], (768, 576), track_boxes=[(300, 150, 340, 250)])
    assert roi is not None and roi[2] >= 340


def test_letterbox_maps_back() -> None:
    img = np.zeros((576, 768, 3), np.uint8)
    lb = letterbox(img, (100, 50, 356, 306), 512)
    assert lb.image.shape == (512, 512, 3)
    assert lb.to_frame(0, 0) == (100, 50)
    assert lb.to_frame(512, 512) == pytest.approx((356, 306))


# ----------------------------------------------------------------------------- capture


class FakeReader:
    """A source yielding a scripted list of frames (None, garbage, resized...)."""

    def __init__(self, frames: list[object]) -> None:
        self.frames = list(frames)
        self.pos = 0

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, object]:
        if self.pos >= len(self.frames):
            return False, None
        f = self.frames[self.pos]
        self.pos += 1
        return True, f

    def grab(self) -> bool:
        return self.pos < len(self.frames)

    def get(self, prop: int) -> float:
        import cv2

        if prop == cv2.CAP_PROP_POS_MSEC:
            return self.pos * 100.0
        if prop == cv2.CAP_PROP_FPS:
            return 10.0
        return 0.0

    def release(self) -> None:
        pass


def test_corrupt_frames_are_counted_and_skipped(tmp_path: Path) -> None:
    src = tmp_path / "fake.mp4"
    src.write_bytes(b"x")
    good = _frame()
    frames: list[object] = [
        good,
        None,
        np.zeros((0, 0, 3), np.uint8),
        b"garbage",
        good,
        np.zeros((100, 100, 3), np.uint8),
        good.astype(np.float32),
        good,
    ]
    m = Registry()
    cap = Capture(
        "c", str(src), detect_fps=lambda: 100.0, stop=threading.Event(), metrics=m,
        opener=lambda s, t: FakeReader(frames),
    )  # fmt: skip
    got = []
    while (f := cap.next()) is not None:
        got.append(f)
    cap.close()
    assert len(got) == 3
    assert m.counter("frames_corrupt_total") == 5
    assert frame_problem(None, None) == "none"
    assert frame_problem(np.zeros((10, 10, 3), np.uint8), (20, 10)) == "size_changed"


def test_file_is_sampled_by_timestamp_not_wall_clock(tmp_path: Path) -> None:
    src = tmp_path / "fake.mp4"
    src.write_bytes(b"x")
    frames: list[object] = [_frame() for _ in range(50)]  # 5 s at 10 fps
    cap = Capture(
        "c",
        str(src),
        detect_fps=lambda: 2.0,
        stop=threading.Event(),
        metrics=Registry(),
        opener=lambda s, t: FakeReader(frames),
    )
    got = []
    while (f := cap.next()) is not None:
        got.append(f)
    assert len(got) == 10
    assert got[1].ts_ms - got[0].ts_ms == 500


def test_missing_file_reports_reconnecting_then_failed(tmp_path: Path) -> None:
    states: list[SourceState] = []
    cap = Capture(
        "c",
        str(tmp_path / "gone.mp4"),
        detect_fps=lambda: 5.0,
        stop=threading.Event(),
        metrics=Registry(),
        on_state=states.append,
        reopen_attempts=3,
        backoff=Backoff(base_s=0.01, cap_s=0.02),
    )
    assert cap.next() is None
    assert [s.state for s in states] == ["reconnecting", "failed"]
    assert "not found" in states[-1].reason


def test_backoff_grows_with_jitter_and_cap() -> None:
    b = Backoff(base_s=0.5, cap_s=4.0)
    delays = [b.next_delay() for _ in range(10)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    b.reset()
    assert b.failures == 0


# ----------------------------------------------------------------------------- events


def _track(box: tuple[float, float, float, float] = (0.4, 0.2, 0.5, 0.6)) -> Track:
    return Track(id=7, label="person", score=0.61234, box=box, first_ms=0, last_ms=0, hits=3, missed=0)


def test_event_without_crop_is_small_and_valid() -> None:
    ev = EventBuilder("site-a", "cam-1", "centernet-fp32@1").build("track_updated", _track(), 1_700_000_000_000)
    raw = encode_event(dataclasses.replace(ev, seq=123456))
    assert len(raw) < 300
    assert isinstance(decode_event(raw), Event)


def test_crop_is_capped_by_lowering_quality() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (576, 768, 3), dtype=np.uint8)  # noise: JPEG's worst case
    b64 = crop_b64(frame, (0.0, 0.0, 1.0, 1.0), 4096)
    assert b64 is not None and len(b64) <= 4096
    assert base64.b64decode(b64)[:2] == b"\xff\xd8"
    ev = EventBuilder("s", "c", "d@1").build(
        "track_started", _track(), 1, with_crop=True, frame_bgr=frame, crop_max_bytes=2048
    )
    assert ev.crop is not None and len(ev.crop) <= 2048
    assert isinstance(decode_event(encode_event(ev)), Event)


# ----------------------------------------------------------------------------- outbox


def _ev(cam: str = "cam-1") -> Event:
    return EventBuilder("s", cam, "d@1").build("track_updated", _track(), 1000)


def test_outbox_seq_survives_restart_and_acks_delete(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    with Outbox(path) as ob:
        seqs = [ob.append(_ev(), "t").seq for _ in range(5)]
        ob.append(_ev("cam-2"), "t")
        assert seqs == [1, 2, 3, 4, 5]
        assert ob.ack("cam-1", [(1, 2), (4, 4)]) == 3
        assert ob.seqs("cam-1") == [3, 5]
    with Outbox(path) as ob:
        assert ob.append(_ev(), "t").seq == 6
        assert ob.depth() == 4
        assert [r.seq for r in ob.due(10.0, 100) if r.cam == "cam-1"] == [3, 5, 6]


def test_outbox_replays_unacked_after_timeout(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    with Outbox(tmp_path / "ob.sqlite", clock=clock) as ob:
        ob.append(_ev(), "t")
        rows = ob.due(5.0, 10)
        ob.mark_sent(r.rid for r in rows)
        assert ob.due(5.0, 10) == []
        clock.advance(6)
        again = ob.due(5.0, 10)
        assert [r.seq for r in again] == [1] and again[0].attempts == 1


def test_outbox_caps_drop_oldest_and_count(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    m = Registry()
    with Outbox(tmp_path / "ob.sqlite", max_events=10, max_age_s=60, metrics=m, clock=clock) as ob:
        for _ in range(15):
            ob.append(_ev(), "t")
        assert ob.depth() == 10 and ob.seqs("cam-1")[0] == 6
        assert m.counter("outbox_dropped_total", why="count") == 5
        clock.advance(61)
        ob.append(_ev(), "t")
        assert m.counter("outbox_dropped_total", why="count") == 6  # the 16th pushed one more out
        assert ob.expire() == 9
        assert ob.seqs("cam-1") == [16]
        assert m.gauge("outbox_depth") == 1


# ----------------------------------------------------------------------------- config


def _cfg(rev: int, config: dict[str, object], cam: str = "cam-1") -> bytes:
    return json.dumps({"v": 1, "site": "s1", "cam": cam, "rev": rev, "config": config}).encode()


def test_config_apply_stale_and_invalid() -> None:
    cam = CameraSettings(id="cam-1", source="x.mp4")
    live = LiveCameraConfig("s1", cam)
    res = live.offer(_cfg(3, {"detect_fps": 2.0, "labels": ["person"], "masks": [[[0, 0], [1, 0], [1, 1]]]}))
    assert isinstance(res, Applied) and set(res.changed) == {"detect_fps", "labels", "masks"}
    assert live.camera.detect_fps == 2.0 and live.rev == 3
    assert isinstance(live.offer(_cfg(3, {"detect_fps": 9.0})), Ignored)
    bad = live.offer(_cfg(4, {"detect_fps": -1}))
    assert isinstance(bad, Rejected) and bad.reason == "invalid_config" and "detect_fps" in bad.detail
    assert live.camera.detect_fps == 2.0  # old config kept
    assert isinstance(live.offer(_cfg(5, {"nonsense": 1})), Rejected)
    not_live = parse_config(_cfg(6, {"source": "other"}), "s1", cam, 0)
    assert not isinstance(not_live, Applied) and not_live.reason == "not_live"
    wrong_camera = parse_config(_cfg(6, {}, cam="cam-2"), "s1", cam, 0)
    assert not isinstance(wrong_camera, Applied) and wrong_camera.reason == "wrong_camera"
    assert isinstance(parse_config(b"{not json", "s1", cam, 0), Rejected)


# ----------------------------------------------------------------------------- command line


def test_a_missing_source_file_on_the_command_line_fails_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main
    from pipeline.edge_stage.command import check_sources

    typo = tmp_path / "no-such-clip.mp4"
    assert main(["edge", "--source", str(typo)]) == 2
    assert f"no such file: {typo}" in capsys.readouterr().err
    # devices (an index or a node, plugged in later) and URLs may come later: no error now
    check_sources(["0", "/dev/video7", "rtsp://camera.local/stream", str(SAMPLE_CLIP)])
    # and a device node is read like a stream (retried when it drops), not as a file that ended
    from pipeline.edge_stage.capture import is_file_source

    assert [is_file_source(s) for s in ("0", "/dev/video0", "http://x/y.mjpg", "clip.mp4")] == [False] * 3 + [True]
