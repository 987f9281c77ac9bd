"""A fixed, deterministic stream of track events whose alerts can be computed in advance.

Event ``i`` goes to camera ``cams[i % len(cams)]``; within a camera, events come in tracks of
three: ``track_started`` (score 0.9), ``track_updated`` and ``track_ended`` (score 0.3). With the
presence rule :data:`RULE` (min score 0.5) and escalation ``never``, exactly the started event
of each track fires, whatever order the worker sees a track's events in, so the expected alert
ids follow from the stream alone (same formula as the cloud stage's alert ids).
"""

from __future__ import annotations

import base64
import functools
import time
import uuid
from dataclasses import dataclass, field

from pipeline.operators.dedupe import alert_id
from pipeline.operators.rules import RuleSpec, camera_key, state_key
from pipeline.operators.schema import Event, EventType
from pipeline.settings import RuleSettings

RULE = RuleSettings(id="chaos-present", kind="presence", labels=["person"], min_score=0.5)
TYPES: tuple[EventType, EventType, EventType] = ("track_started", "track_updated", "track_ended")
STEP_MS = 100  # capture time between consecutive events of the stream


@functools.cache
def tiny_jpeg_b64() -> str:
    """A decodable 32x64 grey JPEG crop, for scenarios that escalate to the heavy model."""
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".jpg", np.full((64, 32, 3), 128, np.uint8))
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


@dataclass(frozen=True)
class ScriptedStream:
    """``n`` events over ``cams`` of ``site``; ids ``<tag>-<cam>-<index>``."""

    n: int
    site: str = "site-chaos"
    cams: tuple[str, ...] = ("cam-1",)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    base_ts: int = field(default_factory=lambda: int(time.time() * 1000))
    crops: bool = False

    def event(self, i: int) -> Event:
        cam = self.cams[i % len(self.cams)]
        j = i // len(self.cams)  # index within the camera
        kind = j % 3
        return Event(
            id=f"{self.tag}-{cam}-{j:06d}",
            site=self.site,
            cam=cam,
            ts=self.base_ts + i * STEP_MS,
            seq=0,  # the outbox assigns it
            type=TYPES[kind],
            track=j // 3 + 1,
            label="person",
            score=0.9 if kind == 0 else 0.3,
            box=(0.2 + 0.01 * (j % 10), 0.3, 0.3 + 0.01 * (j % 10), 0.7),
            det="chaos@1",
            crop=tiny_jpeg_b64() if self.crops and kind == 0 else None,
        )

    def events(self) -> list[Event]:
        return [self.event(i) for i in range(self.n)]

    def ids(self) -> set[str]:
        return {e.id for e in self.events()}

    def expected_alerts(self, rule: RuleSettings = RULE) -> dict[str, str]:
        """alert id -> id of the event that fires it (the started event of each track)."""
        spec = RuleSpec.from_settings(rule)
        out: dict[str, str] = {}
        for ev in self.events():
            if ev.type == "track_started":
                cam = camera_key(ev.site, ev.cam)
                aid = alert_id(rule.id, cam, state_key(spec, cam, ev.track), ev.ts)
                out[aid] = ev.id
        return out
