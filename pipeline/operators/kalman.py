"""Constant-velocity Kalman filter on a box's (cx, cy, w, h), in normalised units and seconds.

Split from :mod:`pipeline.operators.tracking` so the tracker reads as association logic only.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from pipeline.operators.schema import Box

Array = npt.NDArray[np.float64]

MIN_SIZE: Final = 1e-4
# Noise model, in normalised units and seconds. Measurement noise is detector jitter; process
# noise is how fast velocity may change (white-noise acceleration). Pedestrians and cars cross
# a frame in seconds, so accelerations of ~0.5 frame/s^2 are plausible for the centre.
MEAS_STD: Final = np.array([0.01, 0.01, 0.02, 0.02])
ACCEL_STD: Final = np.array([0.5, 0.5, 0.2, 0.2])
INIT_VEL_STD: Final = 0.5
_H: Final = np.hstack([np.eye(4), np.zeros((4, 4))])


def to_cxcywh(box: Box) -> Array:
    x1, y1, x2, y2 = box
    return np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0, max(x2 - x1, MIN_SIZE), max(y2 - y1, MIN_SIZE)])


def from_cxcywh(z: Array) -> Box:
    cx, cy = float(z[0]), float(z[1])
    w, h = max(float(z[2]), MIN_SIZE), max(float(z[3]), MIN_SIZE)
    return (cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)


class KalmanBox:
    """Constant-velocity Kalman filter on (cx, cy, w, h) with their velocities per second."""

    def __init__(self, box: Box) -> None:
        self.x: Array = np.zeros(8)
        self.x[:4] = to_cxcywh(box)
        self.p: Array = np.diag(np.concatenate([MEAS_STD**2, np.full(4, INIT_VEL_STD**2)]))

    def predict(self, dt_s: float) -> None:
        if dt_s <= 0.0:
            return
        f = np.eye(8)
        f[:4, 4:] = np.eye(4) * dt_s
        q = np.zeros((8, 8))
        var = ACCEL_STD**2
        # Discretised white-noise acceleration, per (position, velocity) pair.
        q[:4, :4] = np.diag(var * dt_s**4 / 4.0)
        q[:4, 4:] = q[4:, :4] = np.diag(var * dt_s**3 / 2.0)
        q[4:, 4:] = np.diag(var * dt_s**2)
        self.x = f @ self.x
        self.p = f @ self.p @ f.T + q

    def update(self, box: Box) -> None:
        z = to_cxcywh(box)
        r = np.diag(MEAS_STD**2)
        s = _H @ self.p @ _H.T + r
        k = self.p @ _H.T @ np.linalg.inv(s)
        self.x = self.x + k @ (z - _H @ self.x)
        self.p = (np.eye(8) - k @ _H) @ self.p
        self.p = (self.p + self.p.T) / 2.0  # keep it symmetric against rounding drift

    def restart_from(self, last_seen: Box, now: Box, dt_s: float) -> None:
        """Observation-centric re-update (OC-SORT) after a gap of ``dt_s`` seconds.

        While a track coasts, its velocity integrates noise and the estimate drifts; when it is
        found again, the filter restarts from the observation with the velocity of the two real
        observations around the gap (last seen -> now), instead of trusting the drifted state.
        """
        z_now, z_then = to_cxcywh(now), to_cxcywh(last_seen)
        self.x[:4] = z_now
        self.x[4:6] = (z_now[:2] - z_then[:2]) / max(dt_s, 1e-3)
        self.x[6:] = 0.0  # size changes over a gap are mostly detector noise, not motion
        self.p = np.diag(np.concatenate([MEAS_STD**2, np.full(4, (INIT_VEL_STD / 2) ** 2)]))

    def stop(self) -> None:
        """Forget the velocity (the object is known to be still)."""
        self.x[4:] = 0.0

    def box(self) -> Box:
        return from_cxcywh(self.x[:4])

    def box_at(self, dt_s: float) -> Box:
        """The box extrapolated ``dt_s`` ahead without changing the state."""
        return from_cxcywh(self.x[:4] + self.x[4:] * max(dt_s, 0.0))
