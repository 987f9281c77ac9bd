"""Turn the heavy model's detections on an event's crop into a cloud score and a verdict.

1. The crop (base64 JPEG from the edge) is decoded and letterboxed to the served model's input
   size (``ModelInfo.input_size``: 256 for version 2, sized for crops; 512 for version 1), RGB,
   raw 0-255 floats, no normalisation.
2. Cloud score = the best detection of the event's label whose box overlaps the crop's central
   region (``cloud.crop_centre_fraction`` of its width and height), i.e. the object the edge
   cropped around, not a bystander at the edge of the crop. No such detection: 0.
3. Fused = ``edge_weight * edge + (1 - edge_weight) * cloud``.
4. Verdict: ``verified`` (cloud >= ``contradiction_threshold``), ``contradicted`` (below),
   ``unverified`` (escalated but the model was unavailable) or ``not_escalated``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.cloud_stage.circuit_breaker import CircuitBreaker
from pipeline.cloud_stage.inference_client import InferenceClient, ModelInfo
from pipeline.cloud_stage.micro_batcher import MicroBatcher
from pipeline.errors import InferenceUnavailable, ModelError
from pipeline.metrics import Registry
from pipeline.operators.coco import label_of
from pipeline.operators.schema import Event, Verification
from pipeline.settings import Settings

log = logging.getLogger(__name__)

INPUT_SIZE: Final = 512
PAD_VALUE: Final = 0.0
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Letterboxed:
    image: FloatArray  # [S, S, 3] float32 RGB 0-255
    scale: float  # model px per crop px
    pad_x: float
    pad_y: float
    width: int  # crop size before letterboxing
    height: int


@dataclass(frozen=True, slots=True)
class CropDetection:
    """One heavy-model detection on a crop, box normalised to the crop (x1, y1, x2, y2)."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    central: bool  # overlaps the crop's central region (the object the edge cropped around)


@dataclass(frozen=True, slots=True)
class Verdict:
    cloud_score: float | None
    fused_score: float
    verification: Verification
    model: str | None = None
    detail: str = ""
    detections: tuple[CropDetection, ...] = ()  # what the heavy model saw (hard examples)
    crop_size: tuple[int, int] | None = None  # (width, height) of the decoded crop


def decode_crop(crop_b64: str) -> npt.NDArray[np.uint8] | None:
    """Base64 JPEG -> RGB uint8 image, or None when it is not a decodable image."""
    try:
        raw = base64.b64decode(crop_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        return None
    rgb: npt.NDArray[np.uint8] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.uint8, copy=False)
    return rgb


def letterbox(rgb: npt.NDArray[np.uint8], size: int = INPUT_SIZE) -> Letterboxed:
    """Scale to fit ``size`` keeping the aspect ratio; pad the rest (centred)."""
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
    out = np.full((size, size, 3), PAD_VALUE, np.float32)
    px, py = (size - nw) // 2, (size - nh) // 2
    out[py : py + nh, px : px + nw] = resized
    return Letterboxed(out, scale, float(px), float(py), w, h)


def centre_region(lb: Letterboxed, fraction: float) -> tuple[float, float, float, float]:
    """The crop's central region, in model (S px) coordinates."""
    mx, my = lb.width * (1 - fraction) / 2, lb.height * (1 - fraction) / 2
    return (
        lb.pad_x + mx * lb.scale,
        lb.pad_y + my * lb.scale,
        lb.pad_x + (lb.width - mx) * lb.scale,
        lb.pad_y + (lb.height - my) * lb.scale,
    )


def cloud_score(detections: FloatArray, label: str, region: tuple[float, float, float, float]) -> float:
    """Best score of a ``label`` detection overlapping ``region``; 0.0 when there is none.

    ``detections``: [100, 6] rows x1, y1, x2, y2, score, class (0-based COCO-80).
    """
    rx1, ry1, rx2, ry2 = region
    best = 0.0
    for x1, y1, x2, y2, score, cls in detections:
        if score <= best or label_of(cls) != label:
            continue
        if min(x2, rx2) > max(x1, rx1) and min(y2, ry2) > max(y1, ry1):
            best = float(score)
    return best


def crop_detections(
    detections: FloatArray, lb: Letterboxed, region: tuple[float, float, float, float], min_score: float = 0.1
) -> tuple[CropDetection, ...]:
    """The model's detections above ``min_score`` mapped back to crop-normalised boxes."""
    rx1, ry1, rx2, ry2 = region
    out = []
    for x1, y1, x2, y2, score, cls in detections:
        if not score >= min_score:
            continue

        def nx(v: float) -> float:
            return round(min(1.0, max(0.0, (float(v) - lb.pad_x) / lb.scale / lb.width)), 4)

        def ny(v: float) -> float:
            return round(min(1.0, max(0.0, (float(v) - lb.pad_y) / lb.scale / lb.height)), 4)

        central = bool(min(x2, rx2) > max(x1, rx1) and min(y2, ry2) > max(y1, ry1))
        out.append(CropDetection(label_of(cls), round(float(score), 4), (nx(x1), ny(y1), nx(x2), ny(y2)), central))
    return tuple(out)


def fuse(edge: float, cloud: float | None, edge_weight: float) -> float:
    """Weighted fusion; without a cloud score the edge score stands alone."""
    if cloud is None:
        return edge
    return min(1.0, max(0.0, edge_weight * edge + (1.0 - edge_weight) * cloud))


def judge(edge: float, cloud: float, edge_weight: float, contradiction_threshold: float, model: str) -> Verdict:
    verification: Verification = "verified" if cloud >= contradiction_threshold else "contradicted"
    return Verdict(cloud, fuse(edge, cloud, edge_weight), verification, model)


# --------------------------------------------------------------------------- the verifier service
# Network side: circuit breaker -> micro-batcher -> TF Serving client. The functions above stay pure.


class Verifier:
    """Second opinion on an event's crop. Never raises for an unavailable model: the verdict is
    ``unverified`` (policy ``unverified``) or the call waits for the model (policy ``hold``)."""

    def __init__(self, settings: Settings, metrics: Registry, breaker: CircuitBreaker | None = None) -> None:
        ms = settings.model_server
        self.cloud = settings.cloud
        self.metrics = metrics
        self.client = InferenceClient(ms)
        self.breaker = breaker or CircuitBreaker(ms.breaker_failures, ms.breaker_reset_s, metrics=metrics)
        self.batcher = MicroBatcher(
            self._predict, ms.max_batch, ms.max_wait_ms / 1000, ms.queue_limit, metrics,
            max_latency_s=None if ms.max_latency_ms is None else ms.max_latency_ms / 1000,
            max_inflight=ms.max_inflight,
        )  # fmt: skip
        self.info: ModelInfo | None = None

    async def _connect(self) -> ModelInfo:
        info = await self.client.connect()
        if info.max_batch is not None:
            self.batcher.max_batch = min(self.batcher.max_batch, info.max_batch)
        self.info = info
        return info

    async def _model_info(self) -> ModelInfo:
        """The served model's metadata (its input size decides the letterbox), fetched once."""
        if self.info is not None:
            return self.info
        if not self.breaker.allow():
            raise InferenceUnavailable("circuit open")
        try:
            info = await self._connect()
        except InferenceUnavailable:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return info

    async def _predict(self, batch: FloatArray) -> FloatArray:
        try:
            if self.info is None:
                self.info = await self._connect()
            if self.info.max_batch is not None and len(batch) > self.info.max_batch:
                parts = [
                    await self.client.predict(batch[i : i + self.info.max_batch])
                    for i in range(0, len(batch), self.info.max_batch)
                ]
                out = np.concatenate(parts)
            else:
                out = await self.client.predict(batch)
        except InferenceUnavailable:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return out

    async def verify(self, event: Event) -> Verdict:
        assert event.crop is not None
        rgb = decode_crop(event.crop)
        if rgb is None:
            self.metrics.inc("cloud_verifications_total", verification="unverified", reason="bad_crop")
            return Verdict(None, event.score, "unverified", detail="crop is not a decodable JPEG")
        while True:
            try:
                lb = letterbox(rgb, (await self._model_info()).input_size)
                detections = await self._infer(lb.image)
                break
            except (ModelError, InferenceUnavailable) as exc:
                if not exc.retriable:  # the server answers with the wrong model: no second opinion
                    log.error("heavy model unusable: %s", exc)  # noqa: TRY400 (expected, no traceback)
                    self.breaker.record_failure()
                    self.info = None  # re-check the metadata on the next call
                    self.metrics.inc("cloud_verifications_total", verification="unverified", reason="model_error")
                    return Verdict(None, event.score, "unverified", detail=f"model error: {exc}"[:120])
                # retriable (down, slow, circuit open): the policy says whether to wait for it
                if self.cloud.on_model_unavailable == "unverified":
                    self.metrics.inc(
                        "cloud_verifications_total", help="Verdicts by kind.",
                        verification="unverified", reason="model_unavailable",
                    )  # fmt: skip
                    return Verdict(None, event.score, "unverified", detail=f"model unavailable: {exc}")
                self.metrics.inc("cloud_verification_holds_total", help="Waits for the model (policy hold).")
                await asyncio.sleep(min(1.0, self.breaker.reset_s))
        assert self.info is not None
        region = centre_region(lb, self.cloud.crop_centre_fraction)
        score = cloud_score(detections, event.label, region)
        verdict = judge(event.score, score, self.cloud.edge_weight, self.cloud.contradiction_threshold,
                        self.info.tag)  # fmt: skip
        verdict = replace(verdict, detections=crop_detections(detections, lb, region), crop_size=(lb.width, lb.height))
        self.metrics.inc("cloud_verifications_total", verification=verdict.verification, reason="model")
        return verdict

    async def _infer(self, image: FloatArray) -> FloatArray:
        if not self.breaker.allow():
            raise InferenceUnavailable("circuit open")
        return await self.batcher.infer(image)

    async def close(self) -> None:
        await self.batcher.close()
        await self.client.close()


def verify_each(settings: Settings, events: Sequence[Event], metrics: Registry) -> list[Verdict]:
    """The heavy model's verdict on each event's crop, one after another, outside the worker: how
    the accuracy benchmark and the tests score crops as the worker does (same Verifier, same
    served model). Blocks; opens and closes its own client."""
    verifier = Verifier(settings, metrics)

    async def run() -> list[Verdict]:
        try:
            return [await verifier.verify(e) for e in events]
        finally:
            await verifier.close()

    return asyncio.run(run())
