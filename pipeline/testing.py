"""Test helpers that need no broker: a fake clock, scripted object motion, polling, clip cutting,
and the alert ids a presence rule implies for a set of events.

Importable by any test tier (and the benchmarks); only :func:`cut_clip` touches files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.operators.dedupe import alert_id
from pipeline.operators.person_links import resolve
from pipeline.operators.rules import RuleSpec, camera_key, state_key
from pipeline.operators.schema import Box, Event
from pipeline.settings import SAMPLE_CLIP, RuleSettings


@dataclass
class FakeClock:
    """A clock that moves only when told to. Calling it gives seconds, so one instance fits every
    ``clock: Callable[[], float]`` parameter of the code (circuit breaker, offset guard, outbox,
    capture) without sleeping; ``now_ms`` serves the millisecond timestamps of the operators."""

    t: float = 0.0  # seconds

    def __call__(self) -> float:
        return self.t

    def now_ms(self) -> int:
        return round(self.t * 1000)

    def advance(self, s: float) -> float:
        """Move forward ``s`` seconds; returns the new time."""
        if s < 0:
            raise ValueError("a clock does not go backwards")
        self.t += s
        return self.t


def scripted_track(
    start: tuple[float, float],
    velocity: tuple[float, float],
    *,
    size: tuple[float, float] = (0.08, 0.2),
    frames: int = 50,
    fps: float = 5.0,
    t0_ms: int = 0,
    jitter: float = 0.0,
    seed: int = 0,
) -> list[tuple[int, Box]]:
    """``(t_ms, box)`` for an object whose centre starts at ``start`` and moves at ``velocity``
    (normalised units per second), with uniform jitter of ``+-jitter`` on each box edge.

    Boxes are clipped to the frame. The same seed gives the same boxes.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    out: list[tuple[int, Box]] = []
    for i in range(frames):
        t_s = i / fps
        cx, cy = start[0] + velocity[0] * t_s, start[1] + velocity[1] * t_s
        noise = rng.uniform(-jitter, jitter, 4) if jitter > 0 else np.zeros(4)
        x1, y1, x2, y2 = (
            cx - w / 2 + noise[0],
            cy - h / 2 + noise[1],
            cx + w / 2 + noise[2],
            cy + h / 2 + noise[3],
        )
        x1, y1, x2, y2 = (min(max(float(c), 0.0), 1.0) for c in (x1, y1, x2, y2))
        out.append((t0_ms + round(t_s * 1000), (x1, y1, max(x1, x2), max(y1, y2))))
    return out


def wait_until(pred: Callable[[], bool], timeout_s: float = 10.0, step_s: float = 0.05) -> bool:
    """Poll ``pred`` until it holds or ``timeout_s`` passes; the last answer is returned."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return pred()


def cut_clip(dst: Path, start: int, count: int, src: Path = SAMPLE_CLIP) -> Path:
    """Write frames ``start .. start+count`` of ``src`` to ``dst`` (mp4v, same fps and size)."""
    import cv2  # the edge and cloud extras both carry OpenCV; operators tests need none

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    writer = None
    try:
        for _ in range(count):
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
            writer.write(frame)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError(f"no frames at {start} in {src}")
    return dst


def expected_presence_alerts(
    events: Iterable[Event],
    rule: RuleSettings,
    fused: Callable[[Event], float],
    *,
    link_window_s: float = 10.0,
    arrival_order: bool = False,
) -> dict[str, str]:
    """alert id -> event id that a presence ``rule`` implies for ``events``: per camera, the first
    event of each *person* (a track, or a chain of tracks the edge linked, as the worker resolves
    them with :func:`pipeline.operators.person_links.resolve`) whose label matches and whose
    ``fused`` score reaches min_score. Shared by tests/e2e and tests/compose for exact ids.

    Events are taken in seq order, which is the worker's order when nothing was replayed; with
    ``arrival_order`` they are taken as given, which must then be the order the worker saw them
    (the events topic's offset order, first copy of each id): after a bridge crash the edge
    replays unacknowledged events behind newer ones, and which event opens an incident (so its
    id) follows that order. Needs ``link_window_s`` > 0 (the default 10 s): a person's state
    then lives until the person expires, which is when it is forgotten here too.
    """
    if link_window_s <= 0:
        raise ValueError("link_window_s must be > 0 (persons outlive their tracks' ends)")
    spec = RuleSpec.from_settings(rule)
    ordered = list(events) if arrival_order else sorted(events, key=lambda e: (e.site, e.cam, e.seq))
    links: dict[str, dict[str, Any]] = {}
    fired: set[tuple[str, int]] = set()
    expected: dict[str, str] = {}
    for ev in ordered:
        cam = camera_key(ev.site, ev.cam)
        res = resolve(links.get(cam), ev.track, ev.type, ev.ts, link=ev.attrs.get("link"),
                      window_ms=int(link_window_s * 1000))  # fmt: skip
        links[cam] = res.state
        fired.difference_update((cam, p) for p in res.expired)
        if (cam, res.person) in fired or ev.label not in rule.labels or fused(ev) < rule.min_score:
            continue
        fired.add((cam, res.person))
        aid = alert_id(rule.id, cam, state_key(spec, cam, res.person), ev.ts)
        expected[aid] = ev.id
    return expected
