"""Downlink camera config: eighth step (cloud -> bridge -> retained ``.../config`` -> edge).

Payload ``{"v":1,"site","cam","rev":int,"config":{<partial CameraSettings fields>}}``. A change is
validated against the settings model (``CameraSettings.model_validate`` of the merged fields)
and, when valid, replaces the camera's live settings: detect_fps, min_score, labels, masks,
motion_threshold, crops, crop_max_bytes, blur_faces, pose take effect on the next frame, without
a restart. ``id`` and ``source`` cannot change live. Stale revisions (``rev`` not above the one
applied) are ignored, so the retained copy re-sent on every reconnect is harmless.

Results are values (:class:`Applied`, :class:`Ignored`, :class:`Rejected`), never exceptions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pipeline.operators.wire import Rejected, decode_config
from pipeline.settings import CameraSettings

FIXED_FIELDS = frozenset({"id", "source"})


@dataclass(frozen=True, slots=True)
class Applied:
    rev: int
    camera: CameraSettings
    changed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str


ConfigResult = Applied | Ignored | Rejected


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', '')}")
    return "; ".join(parts)[:300]


def parse_config(raw: bytes, site: str, current: CameraSettings, applied_rev: int) -> ConfigResult:
    msg = decode_config(raw)
    if isinstance(msg, Rejected):
        return msg
    if msg.site != site or msg.cam != current.id:
        return Rejected("wrong_camera", f"site/cam {msg.site!r}/{msg.cam!r} is not {site}/{current.id}")
    rev, update = msg.rev, msg.config
    if rev <= applied_rev:
        return Ignored(f"rev {rev} <= applied {applied_rev}")
    fixed = {k for k in update if k in FIXED_FIELDS and update[k] != getattr(current, k)}
    if fixed:
        return Rejected("not_live", f"cannot change {', '.join(sorted(fixed))} without a restart")
    merged: dict[str, Any] = {**current.model_dump(), **update}
    try:
        new = CameraSettings.model_validate(merged)
    except ValidationError as exc:
        return Rejected("invalid_config", _short(exc))
    changed = tuple(sorted(k for k in update if getattr(new, k) != getattr(current, k)))
    return Applied(rev, new, changed)


class LiveCameraConfig:
    """A camera's current settings, swapped atomically by the MQTT thread, read by the camera thread."""

    def __init__(self, site: str, camera: CameraSettings) -> None:
        self.site = site
        self._camera = camera
        self._rev = 0
        self._lock = threading.Lock()
        self.last_rejection: Rejected | None = None

    @property
    def camera(self) -> CameraSettings:
        return self._camera

    @property
    def rev(self) -> int:
        return self._rev

    def offer(self, raw: bytes) -> ConfigResult:
        with self._lock:
            result = parse_config(raw, self.site, self._camera, self._rev)
            if isinstance(result, Applied):
                self._camera, self._rev = result.camera, result.rev
                self.last_rejection = None
            elif isinstance(result, Rejected):
                self.last_rejection = result
            return result
