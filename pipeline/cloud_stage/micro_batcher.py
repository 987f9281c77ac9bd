"""Group concurrent inference requests (from any camera) into few Predict calls.

What bounds a batch is the latency it adds, not a size to fill:

- a request waits at most ``max_wait_s`` for others to join its batch (0: go at once);
- a batch holds at most as many images as the server computes within ``max_latency_s``: the
  batcher measures the server's cost per image (a moving average of each call's seconds / images)
  and caps the batch at ``max_latency_s / cost`` images (never above ``max_batch``, never below
  1). An event in a burst then waits for a batch of about that duration, not for a batch of
  ``max_batch`` to be computed;
- up to ``max_inflight`` Predict calls are out at once. A batch takes the first free slot; while
  every slot is busy, the next batch keeps filling (up to its cap), so under load batches grow by
  themselves and an idle server is never made to wait.

Measured on the 2-core build machine with the batch-aware served model (version 2, 256 px): one
batched call keeps about one core busy, so two calls in flight use both (see
benchmarks/inference_batching.py and benchmarks/RESULTS.md for the figures).

The queue is bounded (``queue_limit``): when full, :meth:`MicroBatcher.infer` fails at once with
:class:`InferenceUnavailable` (counted as ``cloud_batcher_rejected_total``) instead of letting
latency grow without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt

from pipeline.errors import InferenceUnavailable, PipelineError
from pipeline.metrics import Registry

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float32]
PredictFn = Callable[[FloatArray], Awaitable[FloatArray]]
_Item = tuple[FloatArray, "asyncio.Future[FloatArray]"]
COST_SMOOTHING = 0.3  # weight of the newest call in the per-image cost average


class MicroBatcher:
    def __init__(
        self,
        predict: PredictFn,
        max_batch: int,
        max_wait_s: float,
        queue_limit: int,
        metrics: Registry | None = None,
        *,
        max_latency_s: float | None = None,
        max_inflight: int = 1,
    ) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_latency_s = max_latency_s
        self.max_inflight = max_inflight
        self.queue_limit = queue_limit
        self._metrics = metrics or Registry()
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.image_cost_s: float | None = None  # measured server seconds per image (moving average)
        self.batches = 0
        self.images = 0

    def batch_cap(self) -> int:
        """Most images the next batch may hold: ``max_batch``, lowered by the latency bound."""
        if self.max_latency_s is None or not self.image_cost_s:
            return self.max_batch
        return max(1, min(self.max_batch, int(self.max_latency_s / self.image_cost_s)))

    async def infer(self, image: FloatArray) -> FloatArray:
        """One image [S,S,3] -> its detections [100,6] (awaits the batch it joined)."""
        if self._queue is None:
            self._queue = asyncio.Queue(self.queue_limit)
            self._slots = asyncio.Semaphore(self.max_inflight)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")
        fut: asyncio.Future[FloatArray] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((image, fut))
        except asyncio.QueueFull:
            self._metrics.inc("cloud_batcher_rejected_total", help="Inference requests refused: queue full.")
            raise InferenceUnavailable(f"inference queue full ({self.queue_limit})") from None
        self._metrics.set("cloud_batcher_queue", self._queue.qsize(), help="Requests waiting for a batch.")
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None and self._slots is not None
        queue, slots = self._queue, self._slots
        while True:
            batch = [await queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.batch_cap():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not queue.empty():
                    if queue.empty():
                        break
                    batch.append(queue.get_nowait())
                    continue
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            try:
                await slots.acquire()
            except asyncio.CancelledError:  # close() while this batch waited for a slot
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(InferenceUnavailable("batcher closed"))
                raise
            # Requests that arrived while every slot was busy join now (up to the cap).
            while len(batch) < self.batch_cap() and not queue.empty():
                batch.append(queue.get_nowait())
            task = asyncio.get_running_loop().create_task(self._send(batch), name="micro-batch")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Item]) -> None:
        assert self._slots is not None
        try:
            await self._send_batch(batch)
        finally:
            self._slots.release()
            for _, fut in batch:  # cancelled (close) before an answer: fail, never leave a waiter hanging
                if not fut.done():
                    fut.set_exception(InferenceUnavailable("batcher closed"))

    async def _send_batch(self, batch: list[_Item]) -> None:
        live = [(img, fut) for img, fut in batch if not fut.done()]
        if not live:
            return
        started = time.monotonic()
        try:
            out = await self._predict(np.stack([img for img, _ in live]))
        except PipelineError as exc:
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except Exception as exc:  # a bug or an unexpected client error: fail these requests, keep running
            log.exception("micro-batch predict failed")
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(InferenceUnavailable(f"predict error: {exc!r}"))
            return
        elapsed = time.monotonic() - started
        per_image = elapsed / len(live)
        prev = self.image_cost_s
        self.image_cost_s = per_image if prev is None else prev + COST_SMOOTHING * (per_image - prev)
        self.batches += 1
        self.images += len(live)
        m = self._metrics
        m.inc("cloud_predict_batches_total", help="Predict calls sent to the model server.")
        m.inc("cloud_predict_images_total", len(live), help="Images sent to the model server.")
        m.observe("cloud_predict_batch_size", len(live))
        m.observe("cloud_predict_seconds", elapsed)
        for (_, fut), det in zip(live, out, strict=True):
            if not fut.done():
                fut.set_result(det)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        for task in list(self._sending):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(InferenceUnavailable("batcher closed"))
        self._queue = None
