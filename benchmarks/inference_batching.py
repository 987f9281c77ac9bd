"""Cloud inference: micro-batched Predict calls vs one Predict call per event.

Against the local TF-Serving-compatible model server (the real ``models/centernet`` SavedModel,
the version the cloud gets by default: the newest, 2 = [N,256,256,3] with a real batch
dimension), with real crops: persons the edge detector finds in the sample clip, cut and
JPEG-encoded as the edge does (``crop_b64``), then decoded and letterboxed to the served input
size as the cloud does (``verification.decode_crop`` / ``letterbox``). The client is the cloud
stage's own ``InferenceClient`` (TF Serving gRPC, ``grpc.aio``).

- Load: a burst of N events arriving at once (a backlog after a reconnect, or many cameras'
  tracks starting together). Throughput = N / time until the last answer; latency per event =
  its answer time - the burst time.
- Baseline (same run, same client and server): one ``Predict`` per event, all N in flight at
  once (the server runs them on its thread pool).
- Micro-batched: the cloud's ``MicroBatcher`` with the default settings (``model_server.max_batch``,
  ``max_wait_ms``, ``max_latency_ms``, ``max_inflight``).
- Old model: the same burst, one Predict per event, on version 1 (512 px, batch via ``tf.map_fn``)
  in the same run, for the figure the cloud had before (information).
- Throughput vs batch size: batches of B sent one after another (closed loop), images/s.
"""

from __future__ import annotations

import asyncio
import time

import cv2
import numpy as np
import numpy.typing as npt

from benchmarks.harness import BenchResult, Context, median, quantile
from benchmarks.table import Row, ratio_at_least, ratio_at_most
from pipeline.cloud_stage.inference_client import InferenceClient
from pipeline.cloud_stage.micro_batcher import MicroBatcher
from pipeline.cloud_stage.verification import decode_crop, letterbox
from pipeline.edge_stage.detectors import make_detector
from pipeline.edge_stage.events import crop_b64
from pipeline.settings import SAMPLE_CLIP, EdgeSettings, ModelServerSettings

BATCH_SIZES = (1, 4, 8, 16, 32)
GROUP = "inference batching"
FloatArray = npt.NDArray[np.float32]


def real_crops(n: int, min_score: float = 0.35) -> list[npt.NDArray[np.uint8]]:
    """Up to ``n`` person crops from the clip (RGB, as the cloud decodes them from events)."""
    detector = make_detector(EdgeSettings())
    cap = cv2.VideoCapture(str(SAMPLE_CLIP))
    out: list[npt.NDArray[np.uint8]] = []
    try:
        idx = 0
        while len(out) < n:
            ok, frame = cap.read()
            if not ok:
                break
            idx += 1
            if idx % 10:  # one frame a second: different people, different poses
                continue
            for d in detector.detect(frame):
                if d.label != "person" or d.score < min_score:
                    continue
                b64 = crop_b64(frame, d.box, EdgeSettings().cameras[0].crop_max_bytes)
                rgb = decode_crop(b64) if b64 else None
                if rgb is not None:
                    out.append(rgb)
    finally:
        cap.release()
        detector.close()
    if not out:
        raise RuntimeError("no person crops found in the sample clip")
    return out[:n]


async def _sweep(client: InferenceClient, crops: list[FloatArray], images: int) -> dict[int, float]:
    """images/s for each batch size, batches sent back to back."""
    result: dict[int, float] = {}
    for b in BATCH_SIZES:
        batch = np.stack([crops[i % len(crops)] for i in range(b)])
        if b == BATCH_SIZES[0]:
            await client.predict(batch, timeout_s=120)  # warm-up (one signature serves every size)
        calls = max(1, images // b)
        t0 = time.perf_counter()
        for _ in range(calls):
            await client.predict(batch, timeout_s=120)
        result[b] = calls * b / (time.perf_counter() - t0)
    return result


async def _burst(
    client: InferenceClient, crops: list[FloatArray], n: int, batcher: MicroBatcher | None
) -> tuple[float, list[float], int]:
    """(events/s, per-event latencies in ms, Predict calls) for a burst of ``n`` events."""
    calls_before = batcher.batches if batcher else 0
    t0 = time.perf_counter()
    lat: list[float] = []

    async def one(img: FloatArray) -> None:
        if batcher is None:
            await client.predict(img[None], timeout_s=300)
        else:
            await batcher.infer(img)
        lat.append(1000 * (time.perf_counter() - t0))

    await asyncio.gather(*(one(crops[i % len(crops)]) for i in range(n)))
    makespan = time.perf_counter() - t0
    calls = (batcher.batches - calls_before) if batcher else n
    return n / makespan, lat, calls


async def _measure(ms: ModelServerSettings, rgb_crops: list[npt.NDArray[np.uint8]], ctx: Context) -> dict[str, object]:
    client = InferenceClient(ms.model_copy(update={"timeout_s": 300.0}))
    info = await client.connect()
    old = InferenceClient(ms.model_copy(update={"timeout_s": 300.0, "model_version": 1}))
    old_info = await old.connect()
    crops = [letterbox(c, info.input_size).image for c in rgb_crops]
    old_crops = [letterbox(c, old_info.input_size).image for c in rgb_crops]
    ctx.log(f"inference: model {info.tag} ({info.input_size} px), old {old_info.tag}, {len(crops)} real crops")
    n = 16 if ctx.quick else 96
    batcher = MicroBatcher(
        lambda x: client.predict(x, timeout_s=300),
        ms.max_batch,
        ms.max_wait_ms / 1000,
        queue_limit=max(ms.queue_limit, n),
        max_latency_s=None if ms.max_latency_ms is None else ms.max_latency_ms / 1000,
        max_inflight=ms.max_inflight,
    )
    runs: dict[str, list[tuple[float, list[float], int]]] = {"unbatched": [], "batched": [], "old": []}
    try:
        await _burst(client, crops, 4, None)  # warm-up
        await _burst(client, crops, 8, batcher)
        await _burst(old, old_crops, 2, None)
        for i in range(ctx.repeats):
            for mode in ("unbatched", "batched", "old"):
                ctx.log(f"inference: burst of {n} events, {mode}, run {i + 1}/{ctx.repeats}")
                if mode == "old":
                    r = await _burst(old, old_crops, n, None)
                else:
                    r = await _burst(client, crops, n, batcher if mode == "batched" else None)
                ctx.log(f"   {r[0]:.1f} events/s, p99 {quantile(r[1], 0.99):.0f} ms, {r[2]} Predict calls")
                runs[mode].append(r)
        ctx.log("inference: throughput vs batch size " + ", ".join(map(str, BATCH_SIZES)))
        sweep = await _sweep(client, crops, 8 if ctx.quick else 96)
        ctx.log("   " + ", ".join(f"B={b}: {v:.1f}/s" for b, v in sweep.items()))
    finally:
        await batcher.close()
        await client.close()
        await old.close()
    return {
        "runs": runs, "sweep": sweep, "n": n, "max_batch": ms.max_batch, "max_wait_ms": ms.max_wait_ms,
        "max_latency_ms": ms.max_latency_ms, "max_inflight": ms.max_inflight, "model": info.tag,
        "input_size": info.input_size, "old_model": old_info.tag,
    }  # fmt: skip


def run(ctx: Context) -> BenchResult:
    ms = ctx.stack_settings().model_server
    ctx.log("inference: cutting real person crops from the clip")
    crops = real_crops(32)
    data = asyncio.run(_measure(ms, crops, ctx))
    runs = data["runs"]
    assert isinstance(runs, dict)

    def pick(mode: str) -> tuple[float | None, float | None, float | None, list[float]]:
        rs = runs[mode]
        best = sorted(rs, key=lambda r: r[0])[len(rs) // 2]  # the median-throughput repeat
        return (
            median(r[0] for r in rs),
            median(quantile(r[1], 0.5) for r in rs),
            median(quantile(r[1], 0.99) for r in rs),
            best[1],
        )

    tb, p50b, p99b, lat_b = pick("batched")
    tu, p50u, p99u, lat_u = pick("unbatched")
    to, _, p99o, _ = pick("old")
    calls = median(r[2] for r in runs["batched"])
    n = data["n"]
    rows = [
        Row.make(
            "events/s, micro-batched",
            tb,
            "ev/s",
            baseline=tu,
            baseline_label="1 Predict/event",
            target=ratio_at_least(2),
            group=GROUP,
            note=f"{data['model']} ({data['input_size']} px), burst of {n}, {calls:.0f} Predict calls"
            f" (max_batch {data['max_batch']}, max_wait {data['max_wait_ms']} ms, max_latency"
            f" {data['max_latency_ms']} ms, max_inflight {data['max_inflight']})",
        ),
        Row.make(
            "events/s, micro-batched, vs the old model (512 px, 1 Predict/event)",
            tb,
            "ev/s",
            baseline=to,
            baseline_label=f"{data['old_model']} 1 Predict/event",
            group=GROUP,
            note=f"old model p99 {p99o or 0:.0f} ms in the same burst",
        ),
        Row.make(
            "per-event latency p99, micro-batched",
            p99b,
            "ms",
            baseline=p99u,
            baseline_label="1 Predict/event",
            target=ratio_at_most(1.0),
            group=GROUP,
        ),
        Row.make(
            "per-event latency p50, micro-batched",
            p50b,
            "ms",
            baseline=p50u,
            baseline_label="1 Predict/event",
            group=GROUP,
        ),
    ]
    sweep = data["sweep"]
    assert isinstance(sweep, dict)
    for b, v in sweep.items():
        rows.append(
            Row.make(
                f"images/s at batch {b} (closed loop)",
                v,
                "img/s",
                baseline=sweep.get(1),
                baseline_label="batch 1",
                group=GROUP,
            )
        )
    series = {
        "latency_ms": {"micro-batched": lat_b, "one Predict per event": lat_u},
        "throughput_vs_batch": {str(k): v for k, v in sweep.items()},
        "burst": {m: [(r[0], r[2]) for r in rs] for m, rs in runs.items()},
        "n": n,
    }
    return BenchResult(rows, series)
