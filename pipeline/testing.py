"""Test helpers that need no broker: a fake clock and scripted object motion.

Importable by any test tier; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.operators.schema import Box


@dataclass
class FakeClock:
    """A clock that only moves when told to (milliseconds)."""

    now: int = 0

    def now_ms(self) -> int:
        return self.now

    def now_s(self) -> float:
        return self.now / 1000.0

    def advance(self, ms: int) -> int:
        if ms < 0:
            raise ValueError("a clock does not go backwards")
        self.now += ms
        return self.now


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
