"""Writes hard examples into a dataset directory (called by the cloud worker).

Layout (one day = UTC date of the event's capture time)::

    <dataset>/images/<site>/<cam>/<day>/<event_id>.jpg  the edge's crop, privacy-blurred as configured
    <dataset>/labels/<site>/<cam>/<day>.jsonl          one record per example (see ``record``)
    <dataset>/labels/<site>/<cam>/<day>.counts.json    kept / bytes / dropped (by reason) of that day

A camera is its site and id (camera ids are unique within a site only: every node's first camera
is ``cam-1``), so two sites' ``cam-1`` keep their own caps, reports and threshold suggestions.
Datasets written before, with ``<cam>`` directly under ``images/`` and ``labels/``, still read.

Each camera and day is bounded (``hard_examples.max_per_camera_day`` examples and
``max_bytes_per_camera_day`` image bytes); examples beyond are dropped and counted. A replayed
event (at-least-once processing) is recorded once: its image file already exists.

Privacy: ``blur: person_head`` blurs (Gaussian) the upper third of every person box in the crop:
the heavy model's person detections and, for a ``person`` event, the edge's own box. The edge's
MediaPipe face blur is not reused here: it needs the mediapipe package's models and ai-edge-litert,
which the cloud image does not carry.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.cloud_stage.verification import Verdict
from pipeline.hard_examples.selection import Selected, select
from pipeline.metrics import Registry
from pipeline.operators.schema import Event
from pipeline.privacy_blur import blur_person_heads, edge_box_in_crop
from pipeline.settings import HardExampleSettings

log = logging.getLogger(__name__)
RECORD_VERSION = 1


def day_of(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d")


class HardExampleRecorder:
    def __init__(self, settings: HardExampleSettings, metrics: Registry | None = None) -> None:
        self.s = settings
        self.root = settings.dataset_dir
        self.metrics = metrics or Registry()
        self._counts: dict[tuple[Path, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def consider(self, ev: Event, verdict: Verdict) -> str | None:
        """Record ``ev`` when it is a hard example; the kind recorded, or None."""
        if ev.crop is None:
            return None
        chosen = select(ev, verdict, self.s.agreement_rate, self.s.other_label_min_score)
        if chosen is None:
            return None
        try:
            return self._write(ev, verdict, chosen)
        except OSError as exc:
            self.metrics.inc("hard_examples_dropped_total", help="Hard examples not kept.", reason="io_error")
            log.warning("hard example %s not written: %s", ev.id, exc)
            return None

    def _counts_for(self, cam: Path, day: str) -> dict[str, Any]:
        key = (cam, day)
        if key not in self._counts:
            path = self.root / "labels" / cam / f"{day}.counts.json"
            try:
                self._counts[key] = json.loads(path.read_text())
            except (OSError, ValueError):
                self._counts[key] = {"kept": 0, "bytes": 0, "dropped": {}}
        return self._counts[key]

    def _drop(self, counts: dict[str, Any], cam: Path, day: str, reason: str) -> None:
        counts["dropped"][reason] = counts["dropped"].get(reason, 0) + 1
        self.metrics.inc("hard_examples_dropped_total", help="Hard examples not kept.", reason=reason)
        self._save_counts(cam, day, counts)

    def _save_counts(self, cam: Path, day: str, counts: dict[str, Any]) -> None:
        path = self.root / "labels" / cam / f"{day}.counts.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(counts, sort_keys=True))
        tmp.replace(path)

    def _image(self, ev: Event, verdict: Verdict) -> tuple[bytes, int, int] | None:
        assert ev.crop is not None
        try:
            raw = base64.b64decode(ev.crop, validate=True)
        except (binascii.Error, ValueError):
            return None
        bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            return None
        h, w = bgr.shape[:2]
        if self.s.blur == "none":
            return raw, w, h
        boxes = [d.box for d in verdict.detections if d.label == "person" and d.score >= 0.2]
        if ev.label == "person":
            boxes.append(edge_box_in_crop())
        ok, buf = cv2.imencode(".jpg", blur_person_heads(bgr.astype(np.uint8), boxes), [cv2.IMWRITE_JPEG_QUALITY, 90])
        return (buf.tobytes(), w, h) if ok else None

    def _write(self, ev: Event, verdict: Verdict, chosen: Selected) -> str | None:
        day = day_of(ev.ts)
        cam = Path(ev.site) / ev.cam  # site and id: see the module docstring
        rel = Path("images") / cam / day / f"{ev.id}.jpg"
        with self._lock:
            counts = self._counts_for(cam, day)
            if (self.root / rel).exists():
                return None  # replayed event: recorded already
            if counts["kept"] >= self.s.max_per_camera_day:
                self._drop(counts, cam, day, "count_cap")
                return None
            image = self._image(ev, verdict)
            if image is None:
                self._drop(counts, cam, day, "bad_crop")
                return None
            jpeg, w, h = image
            if counts["bytes"] + len(jpeg) > self.s.max_bytes_per_camera_day:
                self._drop(counts, cam, day, "bytes_cap")
                return None
            labels = self.root / "labels" / cam / f"{day}.jsonl"
            labels.parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            tmp = (self.root / rel).with_suffix(".tmp")
            tmp.write_bytes(jpeg)
            tmp.replace(self.root / rel)  # the image exists before its record names it
            rec = record(ev, verdict, chosen, rel.as_posix(), w, h, self.s)
            try:
                with labels.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            except OSError:
                (self.root / rel).unlink(missing_ok=True)  # a replay may record it again
                raise
            counts["kept"] += 1
            counts["bytes"] += len(jpeg)
            self._save_counts(cam, day, counts)
        self.metrics.inc(
            "hard_examples_total", help="Hard examples recorded.", kind=chosen.kind, site=ev.site, cam=ev.cam
        )
        return chosen.kind


def record(
    ev: Event, verdict: Verdict, chosen: Selected, image: str, width: int, height: int, s: HardExampleSettings
) -> dict[str, Any]:
    """One labelled example: the edge's output, the heavy model's output, versions, camera, time."""
    return {
        "v": RECORD_VERSION,
        "id": ev.id,
        "kind": chosen.kind,
        "site": ev.site,
        "cam": ev.cam,
        "ts": ev.ts,
        "day": day_of(ev.ts),
        "image": image,
        "width": width,
        "height": height,
        "edge": {
            "det": ev.det,
            "label": ev.label,
            "score": ev.score,
            "box": list(ev.box),  # in the frame, normalised
            "box_in_crop": list(edge_box_in_crop()),
            "track": ev.track,
            "type": ev.type,
        },
        "cloud": {
            "model": verdict.model,
            "score": verdict.cloud_score,
            "verification": verdict.verification,
            "label": chosen.cloud_label,
            "detections": [
                {"label": d.label, "score": d.score, "box": list(d.box), "central": d.central}
                for d in verdict.detections
            ],
        },
        "missed_labels": list(chosen.missed_labels),
        "agreement_rate": s.agreement_rate,
        "blur": s.blur,
        "recorded": int(time.time() * 1000),
    }
