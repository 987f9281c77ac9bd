"""Event building: fifth step of the edge data path (... -> tracker -> events -> outbox).

Turns the track event policy's decisions (:mod:`pipeline.operators.track_events`) into wire
:class:`~pipeline.operators.schema.Event` s: a unique id (uuid4 hex), capture time, normalised
box, ``det`` = detector name@version, and for ``track_started`` optionally a base64 JPEG crop of
the object (faces blurred first when asked) kept under ``crop_max_bytes`` by lowering the JPEG
quality, then the size. The per-camera ``seq`` is assigned by the outbox when it stores the event
(one persisted counter per camera, so it survives restarts); events built here carry ``seq=0``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping

import cv2

from pipeline.edge_stage.capture import Image
from pipeline.operators.schema import Event, EventType
from pipeline.operators.tracking import Track

CropFilter = Callable[[Image], Image]  # e.g. face blurring, applied before encoding


def new_event_id() -> str:
    return uuid.uuid4().hex


def crop_pixels(frame_bgr: Image, box: tuple[float, float, float, float], pad: float = 0.1) -> Image:
    """The frame under a normalised box, grown by ``pad`` of its size on each side."""
    h, w = frame_bgr.shape[:2]
    x1, y1, x2, y2 = box
    px, py = (x2 - x1) * pad, (y2 - y1) * pad
    ix1, iy1 = max(0, int((x1 - px) * w)), max(0, int((y1 - py) * h))
    ix2, iy2 = min(w, int((x2 + px) * w) + 1), min(h, int((y2 + py) * h) + 1)
    return frame_bgr[iy1:iy2, ix1:ix2]


def encode_jpeg_capped(image: Image, max_bytes: int, qualities: tuple[int, ...] = (85, 70, 55, 40, 25)) -> bytes | None:
    """JPEG bytes of ``image`` no larger than ``max_bytes`` (lower quality, then halve the size)."""
    img = image
    for _ in range(6):
        if img.size == 0:
            return None
        for q in qualities:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok and len(buf) <= max_bytes:
                return bytes(buf)
        img = cv2.resize(img, (max(1, img.shape[1] // 2), max(1, img.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    return None


def crop_b64(
    frame_bgr: Image, box: tuple[float, float, float, float], max_bytes: int, filt: CropFilter | None = None
) -> str | None:
    """Base64 JPEG crop whose *encoded* length (what goes on the wire) is at most ``max_bytes``."""
    pixels = crop_pixels(frame_bgr, box)
    if pixels.size == 0:
        return None
    if filt is not None:
        pixels = filt(pixels)
    raw_cap = max_bytes * 3 // 4  # base64 grows 4/3
    jpeg = encode_jpeg_capped(pixels, raw_cap)
    return None if jpeg is None else base64.b64encode(jpeg).decode("ascii")


class EventBuilder:
    """Builds one camera's events; ``site``/``cam``/``det`` are fixed, crops follow the live config."""

    def __init__(self, site: str, cam: str, det: str, new_id: Callable[[], str] = new_event_id) -> None:
        self.site, self.cam, self.det = site, cam, det
        self._new_id = new_id

    def build(
        self,
        etype: EventType,
        track: Track,
        ts_ms: int,
        *,
        with_crop: bool = False,
        frame_bgr: Image | None = None,
        crop_max_bytes: int | None = None,
        crop_filter: CropFilter | None = None,
        attrs: Mapping[str, str | float | int | bool] | None = None,
    ) -> Event:
        crop = None
        if with_crop and frame_bgr is not None and crop_max_bytes:
            crop = crop_b64(frame_bgr, track.box, crop_max_bytes, crop_filter)
        x1, y1, x2, y2 = (min(1.0, max(0.0, c)) for c in track.box)
        return Event(
            id=self._new_id(),
            site=self.site,
            cam=self.cam,
            ts=ts_ms,
            seq=0,
            type=etype,
            track=track.id,
            label=track.label,
            score=min(1.0, max(0.0, track.score)),
            box=(x1, y1, max(x1, x2), max(y1, y2)),
            det=self.det,
            crop=crop,
            attrs=dict(attrs or {}),
        )
